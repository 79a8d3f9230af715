"""Task encoders: one object per prompt format, shared by the hand-built and the trained models.

An encoder turns a batch of a task (``mechverify.theory.tasks``) into the token tensor a
model reads (``encode``) and picks the task's predictions out of the model's per-token
outputs (``readout``; the models expose those as ``outputs(tokens)``).  The regression
encoders also give ``prefix_readout``: every prediction the format trains on, (B, k), whose
targets are the last k of y_1..y_n, y_q.  The model in between is the construction or the trained network;
both read the same tokens and are read out at the same positions.

| format                  | encoder                  | tokens                                           | read out at                  |
|-------------------------|--------------------------|--------------------------------------------------|------------------------------|
| stacked regression      | :class:`StackedRegression`   | (x_i, y_i, extra 0) per example, query (x_q, 0) | the query token              |
| interleaved regression  | :class:`InterleavedRegression` | x_1, y_1, ..., x_n, y_n, x_q; x-tokens (x, 0), y-tokens (0_d, y) | every x-token (next y) |
| HMM with separators     | :class:`HMMWithSeparators`   | SEP d_1 .. SEP d_n SEP test, one-hot (O + 1)    | SEP_test and o_1..o_{T-1}     |
| Markov sequences        | :class:`MarkovSequences`     | s_1 .. s_{w+L-1} (ids)                          | positions w .. w+L-1 (next)   |
| masked LM               | :class:`MaskedLM`            | the corrupted ids and the key-visibility mask   | the masked positions          |
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from mechverify.theory.checks import check_int


@dataclass(frozen=True)
class Layout:
    """Named coordinates of the residual stream: ``Layout((("x", d), ("y", 1)))``."""

    fields: tuple[tuple[str, int], ...]

    def __post_init__(self):
        names = [name for name, _ in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"fields must have distinct names; got {names}")
        for name, width in self.fields:
            check_int(f"width of field {name!r}", width)

    @property
    def width(self) -> int:
        return sum(w for _, w in self.fields)

    def slice(self, name: str) -> slice:
        start = 0
        for field, width in self.fields:
            if field == name:
                return slice(start, start + width)
            start += width
        raise KeyError(f"no field {name!r} in layout {[f for f, _ in self.fields]}")

    def index(self, name: str) -> int:
        """Coordinate of a width-1 field."""
        s = self.slice(name)
        if s.stop - s.start != 1:
            raise ValueError(f"field {name!r} has width {s.stop - s.start}, not 1")
        return s.start

    def describe(self) -> str:
        return ", ".join(f"{n}=[{self.slice(n).start}:{self.slice(n).stop}]" for n, _ in self.fields)


def regression_layout(d: int, extra: Sequence[tuple[str, int]] = ()) -> Layout:
    """x (d coordinates), y (1 coordinate), then any extra named fields (initially 0)."""
    return Layout((("x", check_int("d", d)), ("y", 1), *tuple(extra)))


def _regression_tensors(batch, dtype, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(X (B, n, d), y (B, n), x_query (B, d)) from a RegressionBatch-like object or a tuple."""
    if isinstance(batch, tuple):                     # tensors, as a model's callers hold them
        if len(batch) != 3:
            raise ValueError(f"batch must be (X, y, x_query); got a tuple of {len(batch)}")
        parts = batch
    elif all(hasattr(batch, a) for a in ("X", "y", "x_query")):      # a RegressionBatch (numpy)
        parts = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in (batch.X, batch.y, batch.x_query))
    else:
        raise TypeError(f"batch must be a RegressionBatch or a tuple (X, y, x_query); got {type(batch).__name__}")
    out = []
    for name, a in zip(("X", "y", "x_query"), parts):
        if not isinstance(a, torch.Tensor) or not a.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor; got {type(a).__name__}")
        out.append(a)
    X, y, xq = out
    if X.dim() != 3 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"X must have shape (B, n, d) with B, n >= 1; got {tuple(X.shape)}")
    B, n, d = X.shape
    if tuple(y.shape) != (B, n):
        raise ValueError(f"y must have shape ({B}, {n}); got {tuple(y.shape)}")
    if tuple(xq.shape) != (B, d):
        raise ValueError(f"x_query must have shape ({B}, {d}); got {tuple(xq.shape)}")
    for name, a in zip(("X", "y", "x_query"), out):
        if a.numel() and not torch.isfinite(a).all():
            raise ValueError(f"{name} must contain only finite values")
    dtype = X.dtype if dtype is None else dtype
    device = X.device if device is None else device
    return tuple(a.to(dtype=dtype, device=device) for a in out)


class StackedRegression:
    """One token per labelled example, (x_i, y_i) in the ``x`` and ``y`` fields of ``layout``
    (other fields 0), and the query (x_q, 0) last: (B, n + 1, D).  ``readout`` takes the
    per-token outputs (B, n + 1) and returns the query's (B,)."""

    def __init__(self, layout: Layout):
        if not isinstance(layout, Layout):
            raise TypeError(f"layout must be a Layout; got {type(layout).__name__}")
        self.layout = layout
        self.d = layout.slice("x").stop - layout.slice("x").start
        layout.index("y")

    def encode(self, batch, *, dtype=None, device=None) -> torch.Tensor:
        X, y, xq = _regression_tensors(batch, dtype, device)
        if X.shape[2] != self.d:
            raise ValueError(f"X must have last dimension d = {self.d}; got {X.shape[2]}")
        B, n, _ = X.shape
        Z = X.new_zeros(B, n + 1, self.layout.width)
        Z[:, :n, self.layout.slice("x")] = X
        Z[:, n, self.layout.slice("x")] = xq
        Z[:, :n, self.layout.index("y")] = y
        return Z

    def readout(self, output: torch.Tensor) -> torch.Tensor:
        if output.dim() != 2:
            raise ValueError(f"output must be per-token outputs (B, T); got shape {tuple(output.shape)}")
        return output[:, -1]

    def prefix_readout(self, output: torch.Tensor) -> torch.Tensor:
        """The predictions of every prefix the format reads out: the query's only, (B, 1)."""
        return self.readout(output)[:, None]


class InterleavedRegression:
    """Garg et al.'s format: x_1, y_1, ..., x_n, y_n, x_q, with x-tokens (x, 0) and y-tokens
    (0_d, y): (B, 2n + 1, d + 1).  The model's output (B, 2n + 1, 1) at x-token i predicts
    y_i: ``readout`` gives the query's (B,), ``prefix_readout`` every prefix's (B, n + 1)."""

    def __init__(self, d: int):
        self.d = check_int("d", d)

    def encode(self, batch, *, dtype=None, device=None) -> torch.Tensor:
        X, y, xq = _regression_tensors(batch, dtype, device)
        B, n, d = X.shape
        if d != self.d:
            raise ValueError(f"X must have last dimension d = {self.d}; got {d}")
        tokens = X.new_zeros(B, 2 * n + 1, d + 1)
        tokens[:, 0:2 * n:2, :d] = X
        tokens[:, 1:2 * n:2, d] = y
        tokens[:, 2 * n, :d] = xq
        return tokens

    @staticmethod
    def _check(output: torch.Tensor) -> None:
        if output.dim() != 3 or output.shape[1] % 2 != 1 or output.shape[2] != 1:
            raise ValueError(f"output must have shape (B, 2n + 1, 1); got {tuple(output.shape)}")

    def readout(self, output: torch.Tensor) -> torch.Tensor:
        self._check(output)
        return output[:, -1, 0]

    def prefix_readout(self, output: torch.Tensor) -> torch.Tensor:
        self._check(output)
        return output[:, 0::2, 0]


@dataclass(frozen=True)
class HMMTokens:
    """An encoded mixture-of-HMMs prompt: ``ids`` (B, len) with the separator id O,
    ``targets`` (B, len) (the observation each token predicts, -1 where none) and
    ``is_test`` (len,) (the tokens predicting the test sequence's o_1..o_T)."""

    ids: np.ndarray
    targets: np.ndarray
    is_test: np.ndarray
    n_demos: int
    demo_len: int


class HMMWithSeparators:
    """SEP d_1 .. SEP d_n SEP test: one token per observation, the separator (id O) opening
    each sequence; each token predicts the next observation of its sequence, the separator
    the first.  ``readout`` of per-token outputs (B, len, O) gives the rows predicting the
    test sequence's o_1..o_T: (B, T, O)."""

    def __init__(self, n_obs: int, test_len: int):
        self.n_obs, self.test_len = check_int("n_obs", n_obs), check_int("test_len", test_len)

    def encode(self, prompts) -> HMMTokens:
        demos, test = np.asarray(prompts.demos), np.asarray(prompts.test)
        if demos.ndim != 3 or test.ndim != 2 or demos.shape[0] != test.shape[0]:
            raise ValueError(f"prompts must hold demos (B, n, L) and test (B, T); got {demos.shape}, {test.shape}")
        if test.shape[1] != self.test_len:
            raise ValueError(f"the test sequence must have length {self.test_len}; got {test.shape[1]}")
        for name, a in (("demos", demos), ("test", test)):
            if not np.issubdtype(a.dtype, np.integer) or (a.size and (a.min() < 0 or a.max() >= self.n_obs)):
                raise ValueError(f"{name} must hold integer observation ids in [0, {self.n_obs})")
        B, n, L = demos.shape
        T = test.shape[1]
        length = n * (L + 1) + T + 1
        ids = np.full((B, length), self.n_obs, dtype=np.int64)
        targets = np.full((B, length), -1, dtype=np.int64)
        for i, seq in enumerate([demos[:, k] for k in range(n)] + [test]):
            start = i * (L + 1)
            ids[:, start + 1:start + 1 + seq.shape[1]] = seq
            targets[:, start:start + seq.shape[1]] = seq            # SEP -> o_1, o_t -> o_{t+1}
        return HMMTokens(ids, targets, self._test_rows(length), n, L)

    def sequences(self, tokens: HMMTokens) -> tuple[np.ndarray, np.ndarray]:
        """The prompt's sequences back from its tokens: demos (B, n, L) and test (B, T), for a
        model that reads each sequence on its own (the hand-built one)."""
        n, L, T = tokens.n_demos, tokens.demo_len, self.test_len
        starts = np.arange(n) * (L + 1) + 1
        demos = tokens.ids[:, starts[:, None] + np.arange(L)]                  # (B, n, L)
        return demos, tokens.ids[:, self.test_token_positions(tokens.ids.shape[1])]

    def _test_rows(self, length: int) -> np.ndarray:
        rows = np.zeros(length, dtype=bool)
        rows[length - self.test_len - 1:length - 1] = True            # SEP_test, o_1 .. o_{T-1}
        return rows

    def test_token_positions(self, length: int) -> np.ndarray:
        """Positions of the test tokens o_1..o_T in an encoded prompt of ``length`` tokens."""
        return np.arange(length - self.test_len, length)

    def one_hot(self, tokens: HMMTokens, *, dtype=torch.float32, device=None) -> torch.Tensor:
        """The model input (B, len, O + 1)."""
        return F.one_hot(torch.from_numpy(tokens.ids), self.n_obs + 1).to(dtype=dtype, device=device)

    def readout(self, output: torch.Tensor) -> torch.Tensor:
        if output.dim() != 3 or output.shape[2] != self.n_obs or output.shape[1] < self.test_len + 1:
            raise ValueError(f"output must have shape (B, len >= {self.test_len + 1}, {self.n_obs}); "
                             f"got {tuple(output.shape)}")
        return output[:, torch.from_numpy(self._test_rows(output.shape[1])).to(output.device)]


class MarkovSequences:
    """Sequences s_1 .. s_{w+L} of a Markov chain over d states, the first ``w`` a warm-up
    context: the model reads s_1 .. s_{w+L-1} (ids; ``one_hot`` for a real-valued model) and
    its outputs at positions w .. w+L-1 (1-based) predict s_{w+1} .. s_{w+L}."""

    def __init__(self, d: int, w: int):
        self.d, self.w = check_int("d", d), check_int("w", w)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.int64, torch.int32):
            raise TypeError("tokens must be an integer torch.Tensor of state ids")
        if tokens.dim() != 2 or tokens.shape[1] <= self.w:
            raise ValueError(f"tokens must have shape (B, w + L) with L >= 1 (w = {self.w}); got {tuple(tokens.shape)}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.d):
            raise ValueError(f"tokens must hold ids in [0, {self.d})")
        return tokens[:, :-1].long()

    def one_hot(self, inputs: torch.Tensor, *, dtype=torch.float32) -> torch.Tensor:
        return F.one_hot(inputs, self.d).to(dtype)

    def targets(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, self.w:].long()

    def readout(self, output: torch.Tensor) -> torch.Tensor:
        """Logits (B, L, d) of the generated positions from per-token outputs (B, w+L-1, d)."""
        if output.dim() != 3 or output.shape[1] < self.w:
            raise ValueError(f"output must have shape (B, w + L - 1, d) with w = {self.w}; got {tuple(output.shape)}")
        return output[:, self.w - 1:]


@dataclass(frozen=True)
class MLMTokens:
    """An encoded masked-LM batch: ``ids`` (B, N) the corrupted inputs, ``key_visible`` (B, N)
    the positions attention may read, ``selected`` (B, N) the masked positions, ``labels``
    their original ids."""

    ids: torch.Tensor
    key_visible: torch.Tensor
    selected: torch.Tensor
    labels: torch.Tensor


class MaskedLM:
    """BERT-style masked LM: the model reads the corrupted ids with a key-visibility mask and
    is read out at the masked positions."""

    def __init__(self, vocab: int):
        self.vocab = check_int("vocab", vocab)

    def encode(self, masked) -> MLMTokens:
        ids, vis, sel = (np.asarray(getattr(masked, a)) for a in ("inputs", "key_visible", "selected"))
        if ids.ndim != 2 or vis.shape != ids.shape or sel.shape != ids.shape:
            raise ValueError(f"inputs, key_visible and selected must share a shape (B, N); got "
                             f"{ids.shape}, {vis.shape}, {sel.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab):
            raise ValueError(f"inputs must hold ids in [0, {self.vocab})")
        labels = np.asarray(masked.labels)
        return MLMTokens(torch.from_numpy(ids).long(), torch.from_numpy(vis.astype(bool)),
                         torch.from_numpy(sel.astype(bool)), torch.from_numpy(labels[sel.astype(bool)]).long())

    def readout(self, output: torch.Tensor, tokens: MLMTokens) -> torch.Tensor:
        """Logits (M, vocab) at the M masked positions (row order of ``tokens.labels``)."""
        if output.shape[:2] != tokens.ids.shape:
            raise ValueError(f"output must have shape {tuple(tokens.ids.shape)} + (vocab,); got {tuple(output.shape)}")
        return output[tokens.selected]
