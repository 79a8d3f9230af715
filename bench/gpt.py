"""Training throughput of our GPT (``mechverify.constructions.modules.GPT``) against Hugging Face
``transformers``' GPT-2 with the same configuration, measured in the same run, one thread.

Configurations (the two trained GPTs of the papers):

hmm                4 layers, d_model 48, 4 heads, 65 tokens of width 9, 8 outputs, batch 32
sparse_regression  3 layers, d_model 64, 4 heads, 33 tokens of width 9, 1 output, batch 64

Both models are: a linear read-in of the real-valued tokens plus learned positions, pre-LN
blocks (causal softmax attention, GELU MLP of width 4 d_model), a final LayerNorm and a
linear read-out.  The HF model is ``GPT2Model`` fed ``inputs_embeds`` from the same read-in,
with ``activation_function="gelu"`` (exact GELU, as ours), no dropout, its default
attention implementation, and our read-in/read-out layers around it; its 1-row token
embedding is never used.  One training step: forward, mean-square loss against fixed
random targets, backward, gradient-norm clip 1.0, Adam step, ``zero_grad``.

Timed items, interleaved in rounds (``bench.time_rounds``; each call runs ``STEPS`` steps):

ours        our GPT with Adam as our training runs create it (:func:`optimizer`)
hf          HF GPT-2 with ``torch.optim.Adam`` at torch's defaults
hf+same     HF GPT-2 with our optimizer settings (how much of the gap is the model)

The ratio reported is steps/s of ``ours`` over ``hf`` (best rounds; the median ratio too).
"""

from __future__ import annotations

import time

import torch

from bench import load_average, table, time_rounds
from mechverify.constructions.modules import GPT

CONFIGS = {
    "hmm": dict(d_in=9, d_model=48, n_layers=4, n_heads=4, max_len=65, d_out=8, batch=32),
    "sparse_regression": dict(d_in=9, d_model=64, n_layers=3, n_heads=4, max_len=33, d_out=1, batch=64),
}
STEPS = 20            # training steps per timed call
TARGET = 1.2


def optimizer(params) -> torch.optim.Optimizer:
    """Adam with the fused CPU step (one kernel for all parameters) where torch has it."""
    return torch.optim.Adam(params, lr=1e-3, fused=True)


class HFGPT(torch.nn.Module):
    """HF GPT-2 between our read-in and read-out (module doc)."""

    def __init__(self, d_in, d_model, n_layers, n_heads, max_len, d_out):
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        cfg = GPT2Config(vocab_size=1, n_positions=max_len, n_embd=d_model, n_layer=n_layers, n_head=n_heads,
                         n_inner=4 * d_model, activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0,
                         attn_pdrop=0.0, layer_norm_epsilon=1e-5, use_cache=False, bos_token_id=None,
                         eos_token_id=None)
        self.read_in = torch.nn.Linear(d_in, d_model)
        self.body = GPT2Model(cfg)
        self.read_out = torch.nn.Linear(d_model, d_out)

    def forward(self, tokens):
        return self.read_out(self.body(inputs_embeds=self.read_in(tokens)).last_hidden_state)


def _trainer(model, opt, tokens, target):
    def steps():
        for _ in range(STEPS):
            loss = (model(tokens) - target).square().mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
    return steps


def _measure(name: str, cfg: dict, quick: bool) -> dict:
    arch = {k: v for k, v in cfg.items() if k != "batch"}
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(cfg["batch"], cfg["max_len"], cfg["d_in"], generator=gen)
    target = torch.randn(cfg["batch"], cfg["max_len"], cfg["d_out"], generator=gen)
    ours = GPT(**arch, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    hf, hf_same = HFGPT(**arch), HFGPT(**arch)
    fns = {"ours": _trainer(ours, optimizer(ours.parameters()), tokens, target),
           "hf": _trainer(hf, torch.optim.Adam(hf.parameters(), lr=1e-3), tokens, target),
           "hf+same": _trainer(hf_same, optimizer(hf_same.parameters()), tokens, target)}
    t = time_rounds(fns, reps=4 if quick else 12, warmup=1, min_reps=3, budget_s=8.0 if quick else 30.0)
    rate = {k: STEPS / v.best for k, v in t.items()}
    median_rate = {k: STEPS / v.median for k, v in t.items()}
    return {"config": cfg, "steps_per_call": STEPS, "timings": {k: v.as_dict() for k, v in t.items()},
            "steps_per_s": rate, "median_steps_per_s": median_rate,
            "ratio_ours_over_hf": rate["ours"] / rate["hf"],
            "median_ratio_ours_over_hf": median_rate["ours"] / median_rate["hf"],
            "ratio_ours_over_hf_same_optimizer": rate["ours"] / rate["hf+same"],
            "params": {"ours": sum(p.numel() for p in ours.parameters()),
                       "hf": sum(p.numel() for p in hf.parameters())}}


def run(quick: bool = False, emit=print) -> dict:
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        import transformers
    except ImportError:
        emit("\n=== GPT vs HF GPT-2: skipped (transformers is not installed; see requirements-extras.lock) ===")
        torch.set_num_threads(threads)
        return {"skipped": "transformers not installed"}
    emit(f"\n=== GPT training throughput vs HF transformers {transformers.__version__} GPT-2, "
         f"1 thread, {STEPS} steps a call; load average {load_average()} ===")
    try:
        out = {name: _measure(name, cfg, quick) for name, cfg in CONFIGS.items()}
    finally:
        torch.set_num_threads(threads)
    rows = [[name, f"{r['config']['n_layers']} / {r['config']['max_len']}", f"{r['steps_per_s']['ours']:.1f}",
             f"{r['steps_per_s']['hf']:.1f}", f"{r['steps_per_s']['hf+same']:.1f}",
             f"{r['ratio_ours_over_hf']:.2f}x", f"{r['median_ratio_ours_over_hf']:.2f}x",
             f"{r['ratio_ours_over_hf_same_optimizer']:.2f}x"] for name, r in out.items()]
    emit(table(["config", "layers / tokens", "ours steps/s", "HF steps/s", "HF+our opt", "ours/HF",
                "median ours/HF", "ours/(HF+our opt)"], rows))
    met = min(r["ratio_ours_over_hf"] for r in out.values()) >= TARGET
    emit(f"target ours/HF >= {TARGET}x (best rounds): {'met' if met else 'not met'}; "
         f"load average at the end {load_average()}")
    return {"configs": out, "target": TARGET, "met": met, "threads": 1,
            "wall_s": time.perf_counter() - started}
