"""Export to TransformerLens (optional extra ``mechverify[export]``, pinned
``transformer-lens==3.9.0``, the last release with ``HookedTransformer``).

:func:`to_transformer_lens` converts a :class:`mechverify.constructions.modules.GPT` (pre-LN softmax
blocks, GELU MLP, final LayerNorm, linear read-out) into a ``HookedTransformer`` with the
same weights, so TransformerLens' hooks, caches and patching tools apply to it.

Weight map (ours -> TransformerLens; D = d_model, H heads of width dh = D / H):

| ours | TransformerLens |
|---|---|
| ``blocks[l].attn.qkv`` rows ``s*D + h*dh ...`` (s = 0, 1, 2 for q, k, v) | ``W_Q/W_K/W_V[h]`` (D, dh) = those rows transposed; biases ``b_Q/b_K/b_V[h]`` |
| ``blocks[l].attn.out`` columns ``h*dh ...`` | ``W_O[h]`` (dh, D); ``b_O`` |
| ``blocks[l].mlp[0]``, ``mlp[2]`` | ``W_in`` (D, 4D), ``b_in``; ``W_out`` (4D, D), ``b_out`` |
| ``ln1``, ``ln2``, ``ln_f`` | ``ln1``, ``ln2``, ``ln_final`` (w, b; eps copied) |
| ``pos`` | ``pos_embed.W_pos`` |
| ``read_out`` | ``unembed.W_U`` (D, d_out), ``b_U`` |
| ``read_in`` (linear, real-valued tokens) | ``embed.W_E`` = ``read_in.weight``ᵀ; see below |

Our models read real-valued tokens through an affine map; TransformerLens embeds token ids.
``W_E`` holds the read-in weights, so one-hot inputs given as ids embed alike up to the
read-in bias, which TransformerLens has no slot for.  The exact route for any input is
``tl_model(gpt.embed(tokens), start_at_layer=0)`` (residual stream in, logits out);
:func:`parity_error` measures that route against our forward pass.

Linear-attention constructions (GD-ICL, PtO, the GD layers of the HMM construction) are not
exportable: TransformerLens' attention is softmax attention.
"""

from __future__ import annotations

import warnings

import torch

from mechverify.constructions.modules import GPT

TL_VERSION = "3.9.0"


def _require_transformer_lens():
    try:
        import transformer_lens
    except ImportError as err:                                  # pragma: no cover - depends on the extra
        raise ImportError("export needs the optional extra: pip install 'mechverify[export]' "
                          f"(transformer-lens=={TL_VERSION})") from err
    return transformer_lens


def to_transformer_lens(gpt: GPT):
    """A ``transformer_lens.HookedTransformer`` with ``gpt``'s weights (same dtype/device)."""
    if not isinstance(gpt, GPT):
        raise TypeError(f"gpt must be a mechverify.constructions.modules.GPT; got {type(gpt).__name__}")
    tl = _require_transformer_lens()
    block0 = gpt.blocks[0]
    D, H = block0.attn.d_model, block0.attn.n_heads
    dh = D // H
    ref = gpt.read_out.weight
    cfg = tl.HookedTransformerConfig(
        n_layers=len(gpt.blocks), d_model=D, n_ctx=gpt.max_len, d_head=dh, n_heads=H,
        d_mlp=block0.mlp[0].out_features, d_vocab=gpt.read_in.in_features,
        d_vocab_out=gpt.read_out.out_features, act_fn="gelu", normalization_type="LN",
        eps=gpt.ln_f.eps, dtype=ref.dtype, device=str(ref.device), default_prepend_bos=False)
    with warnings.catch_warnings():      # 3.x announces the 4.0 removal on every construction
        warnings.simplefilter("ignore", DeprecationWarning)
        model = tl.HookedTransformer(cfg)
    state = model.state_dict()

    def put(name, value):
        if state[name].shape != value.shape:                     # a layout drift is a bug, say so
            raise RuntimeError(f"{name}: shape {tuple(value.shape)} vs TransformerLens {tuple(state[name].shape)}")
        state[name] = value.detach().clone()

    put("embed.W_E", gpt.read_in.weight.T)
    put("pos_embed.W_pos", gpt.pos)
    for l, block in enumerate(gpt.blocks):
        p = f"blocks.{l}."
        W, b = block.attn.qkv.weight, block.attn.qkv.bias
        for s, name in enumerate("QKV"):
            put(p + f"attn.W_{name}", W[s * D:(s + 1) * D].reshape(H, dh, D).transpose(1, 2))
            put(p + f"attn.b_{name}", b[s * D:(s + 1) * D].reshape(H, dh))
        put(p + "attn.W_O", block.attn.out.weight.T.reshape(H, dh, D))
        put(p + "attn.b_O", block.attn.out.bias)
        put(p + "mlp.W_in", block.mlp[0].weight.T)
        put(p + "mlp.b_in", block.mlp[0].bias)
        put(p + "mlp.W_out", block.mlp[2].weight.T)
        put(p + "mlp.b_out", block.mlp[2].bias)
        for ln in ("ln1", "ln2"):
            put(p + f"{ln}.w", getattr(block, ln).weight)
            put(p + f"{ln}.b", getattr(block, ln).bias)
    put("ln_final.w", gpt.ln_f.weight)
    put("ln_final.b", gpt.ln_f.bias)
    put("unembed.W_U", gpt.read_out.weight.T)
    put("unembed.b_U", gpt.read_out.bias)
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def parity_error(gpt: GPT, tl_model, tokens: torch.Tensor) -> float:
    """max |ours - TransformerLens| over the outputs of ``tokens`` (B, T, d_in), TransformerLens
    run from the residual stream ``gpt.embed(tokens)``."""
    ours = gpt(tokens)
    theirs = tl_model(gpt.embed(tokens), start_at_layer=0)
    return float((ours - theirs).abs().max())
