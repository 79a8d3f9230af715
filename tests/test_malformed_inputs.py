"""Property: every public sampler, constructor and config, given one malformed argument,
raises ValueError or TypeError whose message names that argument — never another exception,
never a result (so never a NaN output or a silent clip).

Each entry of ``CASES`` is a callable, valid keyword arguments and, per argument, the kind
of value it takes; hypothesis draws an entry, one argument and a malformed value of that
kind (non-positive or fractional counts, negative seeds, NaN/inf/negative reals, unknown
choices, wrong-typed values, arrays of the wrong rank/shape or with a non-finite entry).
The number of malformed inputs tried is ``MAX_EXAMPLES`` per run (printed with ``-s``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mechverify.constructions.hmm import hmm_construction
from mechverify.constructions.markov import MinimalMarkovModel, exact_minimal_model, full_markov_model
from mechverify.constructions.topics import TopicMLM, attention_construction, embedding_construction, value_construction
from mechverify.constructions.gd_icl import gd_transformer, gdpp_transformer, preconditioned_gd_transformer, relu_gd_transformer
from mechverify.constructions.modules import GPT, GPTBlock, LinearAttention, SoftmaxAttention
from mechverify.constructions.sparse_regression import pto_transformer, preprocessing_layer
from mechverify.theory.algorithms.regression import gd_predict, lasso_weights, pto_predict, ridge_predict
from mechverify.theory.algorithms.tuning import SparseComparison
from mechverify.theory.symbolic.topics import optimal_block_contrast
from mechverify.theory.tasks.hmm import HMM, random_hmm, random_hmms, sample_prompts
from mechverify.theory.tasks.topics import mask_documents, sample_lda
from mechverify.theory.tasks.markov import MarkovTask
from mechverify.theory.tasks.markov import sample_sequences as markov_sequences
from mechverify.theory.tasks.regression import sample_regression
from mechverify.theory.tasks.zipf import zipf_markov
from mechverify.theory.tasks.text import build_vocabulary, pydoc_documents
from mechverify.training.aky import bayes_lam, ridge_probe_r2
from mechverify.training.hmm import HMMTrainConfig
from mechverify.training.gd_icl import LSATrainConfig
from mechverify.training.markov import MarkovTrainConfig
from mechverify.training.meta_learning import MetaNormConfig
from mechverify.training.sparse_regression import SparseTrainConfig

MAX_EXAMPLES = 2000


@dataclass
class Case:
    fn: object
    valid: dict
    kinds: dict = field(default_factory=dict)     # argument -> kind (see _STRATEGIES; "opt_" admits None)
    linked: tuple = ()                            # arguments checked against each other: either may be named
    free: dict = field(default_factory=dict)      # array argument -> axes whose length may change


_XYQ = ("X", "y", "x_query")
_rng = np.random.default_rng(0)
_X, _y, _xq = _rng.standard_normal((2, 5, 3)), _rng.standard_normal((2, 5)), _rng.standard_normal((2, 3))

_T = np.array([[0.9, 0.1], [0.2, 0.8]])
_E = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
_HMMS = random_hmms(2, 3, 4, seed=0)
_DOCS = sample_lda(3, n_topics=2, words_per_topic=3, doc_len=(5, 8), seed=0).tokens

CASES = {
    "sample_regression": Case(sample_regression, dict(n_prompts=3, n=4, d=2, noise=0.1, x_range=1.0, seed=0,
                                                      first=0, x_dist="gaussian", w_prior="isotropic"),
                              dict(n_prompts="count", n="count", d="count", noise="nonneg", x_range="positive",
                                   seed="index", first="index", x_dist="choice", w_prior="choice")),
    "gd_predict": Case(gd_predict, dict(X=_X, y=_y, x_query=_xq, lr=0.1, steps=2),
                       dict(X="array", y="array", x_query="array", lr="real", steps="index"), _XYQ),
    "ridge_predict": Case(ridge_predict, dict(X=_X, y=_y, x_query=_xq, lam=0.1),
                          dict(X="array", y="array", x_query="array", lam="positive"), _XYQ),
    "pto_predict": Case(pto_predict, dict(X=_X, y=_y, x_query=_xq, lr=0.1, steps=2),
                        dict(X="array", y="array", x_query="array", lr="positive", steps="index"), _XYQ),
    "lasso_weights": Case(lasso_weights, dict(X=_X, y=_y, lam=0.1, tol=1e-8, max_iter=100),
                          dict(X="array", y="array", lam="nonneg", tol="positive", max_iter="count"), _XYQ,
                          free={"X": (2,)}),
    "gd_transformer": Case(gd_transformer, dict(d=3, n_layers=2, lr=0.1), dict(d="count", n_layers="count", lr="real")),
    "relu_gd_transformer": Case(relu_gd_transformer, dict(d=3, n_layers=2, lr=0.1),
                                dict(d="count", n_layers="count", lr="real")),
    "gdpp_transformer": Case(gdpp_transformer, dict(d=3, n_layers=2, lr=0.1, gamma=0.1),
                             dict(d="count", n_layers="count", lr="real", gamma="real")),
    "preconditioned_gd_transformer": Case(preconditioned_gd_transformer, dict(preconditioners=[np.eye(3), 2 * np.eye(3)]),
                                          dict(preconditioners="array"), free={"preconditioners": (0,)}),
    "pto_transformer": Case(pto_transformer, dict(d=3, n_gd_layers=2, lr=0.1),
                            dict(d="count", n_gd_layers="index", lr="positive")),
    "preprocessing_layer": Case(preprocessing_layer, dict(d=3), dict(d="count")),
    "LinearAttention": Case(LinearAttention, dict(d_model=4, n_heads=2, d_head=3, d_value=3, init_scale=0.1),
                            dict(d_model="count", n_heads="count", d_head="opt_count", d_value="opt_count",
                                 init_scale="nonneg")),
    "SoftmaxAttention": Case(SoftmaxAttention, dict(d_model=4, n_heads=2), dict(d_model="count", n_heads="count")),
    "GPTBlock": Case(GPTBlock, dict(d_model=4, n_heads=2), dict(d_model="count", n_heads="count")),
    "GPT": Case(GPT, dict(d_in=3, d_model=4, n_layers=1, n_heads=2, max_len=5, d_out=1),
                dict(d_in="count", d_model="count", n_layers="count", n_heads="count", max_len="count", d_out="count")),
    "LSATrainConfig": Case(LSATrainConfig, dict(d=3, n=4, n_layers=1, steps=2, batch=4, lr=0.1, init_scale=0.1,
                                                x_range=1.0, noise=0.0, log_every=1, seed=0, optimizer="adam",
                                                parametrization="full", x_dist="uniform", dtype="float32"),
                           dict(d="count", n="count", n_layers="count", steps="count", batch="count", lr="positive",
                                init_scale="nonneg", x_range="positive", noise="nonneg", log_every="count",
                                seed="index", optimizer="choice", parametrization="choice", x_dist="choice",
                                dtype="choice")),
    "SparseTrainConfig": Case(SparseTrainConfig, dict(arch="linear", d=4, s=2, noise=0.5, n=6, n_layers=2, n_heads=2,
                                                      width=8, steps=2, batch=4, lr=0.1, warmup=0, decay="constant",
                                                      clip=1.0, init_scale=0.1, log_every=1, seed=0),
                              dict(arch="choice", d="count", s="count", noise="nonneg", n="count", n_layers="count",
                                   n_heads="count", width="count", steps="count", batch="count", lr="positive",
                                   warmup="index", decay="choice", clip="positive", init_scale="nonneg",
                                   log_every="count", seed="index")),
    "SparseComparison": Case(SparseComparison, dict(d=4, s=2, n=6, noise=0.5, n_tasks=4, seed=0, max_steps=3),
                             dict(d="count", s="count", n="count", noise="nonneg", n_tasks="count", seed="index",
                                  max_steps="count")),
    "HMM": Case(HMM, dict(transition=_T, emission=_E, initial=np.array([0.5, 0.5])),
                dict(transition="array", emission="array", initial="array"), ("transition", "emission", "initial")),
    "random_hmm": Case(random_hmm, dict(S=3, O=4, rank=2, seed=0, emission_concentration=0.3,
                                        transition_concentration=1.0, self_loop=0.0, initial="stationary"),
                       dict(S="count", O="count", rank="opt_count", seed="index", emission_concentration="positive",
                            transition_concentration="positive", initial="choice")),
    "sample_prompts": Case(sample_prompts, dict(hmms=_HMMS, n_prompts=3, n_demos=2, demo_len=4, test_len=3, seed=0),
                           dict(n_prompts="count", n_demos="index", demo_len="count", test_len="count", seed="index")),
    "hmm_construction": Case(hmm_construction, dict(n_obs=3, r=2, n_gd_layers=2, lr=0.5, beta=10.0, max_len=20),
                             dict(n_obs="count", r="count", n_gd_layers="index", lr="real", beta="positive",
                                  max_len="count")),
    "HMMTrainConfig": Case(HMMTrainConfig, dict(n_hmms=4, n_states=4, n_obs=4, rank=2, max_demos=2, demo_len=4,
                                                test_len=4, n_layers=1, d_model=8, n_heads=2, loss="all", steps=2,
                                                batch=2, lr=0.1, warmup=0, decay="constant", clip=1.0, log_every=1,
                                                seed=0),
                           dict(n_hmms="count", n_states="count", n_obs="count", rank="opt_count", max_demos="index",
                                demo_len="count", test_len="count", n_layers="count", d_model="count",
                                n_heads="count", loss="choice", steps="count", batch="count", lr="positive",
                                warmup="index", decay="choice", clip="positive", log_every="count", seed="index")),
    "sample_lda": Case(sample_lda, dict(n_docs=3, n_topics=2, words_per_topic=3, alpha=0.1, doc_len=(5, 8), seed=0),
                       dict(n_docs="count", n_topics="count", words_per_topic="count", alpha="positive",
                            seed="index")),
    "mask_documents": Case(mask_documents, dict(tokens=_DOCS, vocab=10, p_mask=0.15, p_random=0.1, p_keep=0.1, seed=0),
                           dict(vocab="count", p_mask="positive", seed="index")),
    "optimal_block_contrast": Case(optimal_block_contrast, dict(n_topics=2, words_per_topic=3, alpha=0.5,
                                                                doc_len=None),
                                   dict(n_topics="count", words_per_topic="count", alpha="positive")),
    "TopicMLM": Case(TopicMLM, dict(vocab=10, d=6, decoder="tied"), dict(vocab="count", d="opt_count",
                                                                        decoder="choice")),
    "value_construction": Case(value_construction, dict(n_topics=2, words_per_topic=3, c=2.0),
                               dict(n_topics="count", words_per_topic="count", c="real")),
    "embedding_construction": Case(embedding_construction, dict(n_topics=2, words_per_topic=3, c=2.0),
                                   dict(n_topics="count", words_per_topic="count", c="nonneg")),
    "attention_construction": Case(attention_construction, dict(n_topics=2, words_per_topic=3, c=2.0, beta=1.0),
                                   dict(n_topics="count", words_per_topic="count", c="real", beta="real")),
    "zipf_markov": Case(zipf_markov, dict(vocab=8, exponent=1.1, sharpness=2.0, seed=0),
                        dict(vocab="count", exponent="real", sharpness="real", seed="index")),
    "MetaNormConfig": Case(MetaNormConfig, dict(corpus="zipf", final_norm="layernorm", n_layers=1, d_model=8,
                                                n_heads=2, context=4, batch=2, steps=2, lr=0.1, clip=1.0, vocab=8,
                                                log_every=1, seed=0),
                           dict(corpus="choice", final_norm="choice", n_layers="count", d_model="count",
                                n_heads="count", context="count", batch="count", steps="count", lr="positive",
                                clip="positive", vocab="count", log_every="count", seed="index")),
    "MarkovTask": Case(MarkovTask, dict(d=6, sizes=(2, 2), m=1.7, tau=0.1, L=5, teacher_seed=0),
                       dict(d="count", m="positive", tau="positive", L="count", teacher_seed="index")),
    "markov_sequences": Case(markov_sequences, dict(task=MarkovTask(d=6, sizes=(2, 2), L=5), n=3, seed=0),
                             dict(n="count", seed="index")),
    "exact_minimal_model": Case(exact_minimal_model, dict(task=MarkovTask(d=6, sizes=(2, 2), L=5), beta=5.0),
                                dict(beta="nonneg")),
    "MinimalMarkovModel": Case(MinimalMarkovModel, dict(d=6, n_positions=8, n_heads=2, init="small", sigma_q=0.1),
                               dict(d="count", n_positions="count", n_heads="count", init="choice",
                                    sigma_q="nonneg")),
    "full_markov_model": Case(full_markov_model, dict(d=6, n_positions=8, width=6, n_heads=3),
                              dict(d="count", n_positions="count", width="count", n_heads="count")),
    "MarkovTrainConfig": Case(MarkovTrainConfig, dict(arch="minimal", n_heads=3, width=6, batch=4, n_val=4, steps=2,
                                                      lr=0.1, clip=1.0, init="xavier", sigma_q=0.0, patience=2,
                                                      log_every=1, seed=0),
                              dict(arch="choice", n_heads="count", width="count", batch="count", n_val="count",
                                   steps="count", lr="positive", clip="positive", init="choice", sigma_q="nonneg",
                                   patience="count", log_every="count", seed="index")),
    "bayes_lam": Case(bayes_lam, dict(noise=0.5, n=16, tau=1.0), dict(noise="positive", n="count", tau="positive")),
    "ridge_probe_r2": Case(ridge_probe_r2, dict(train_x=np.ones((6, 3)) + np.eye(6, 3), train_t=np.ones((6, 2)),
                                                test_x=np.ones((5, 3)), test_t=np.eye(5, 2), ridge=1e-3),
                           dict(train_x="array", train_t="array", test_x="array", test_t="array", ridge="nonneg"),
                           ("train_x", "train_t", "test_x", "test_t")),
    "pydoc_documents": Case(pydoc_documents, dict(split="topic", min_words=1), dict(split="choice", min_words="count")),
    "build_vocabulary": Case(build_vocabulary, dict(token_lists=[["a", "b"], ["a"]], max_size=5, min_count=1),
                             dict(max_size="opt_count", min_count="count")),
}

_junk = st.one_of(st.text(max_size=4), st.booleans(), st.none(), st.just([1]), st.just(object()))
_nonfinite = st.sampled_from([float("nan"), float("inf"), -float("inf")])
_STRATEGIES = {
    "count": st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), _junk),
    "opt_count": st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), _junk.filter(lambda v: v is not None)),
    "index": st.one_of(st.integers(max_value=-1), st.floats(allow_nan=True).filter(lambda v: v != int(v) if np.isfinite(v) else True), _junk),
    "positive": st.one_of(st.floats(max_value=0.0), _nonfinite, _junk),
    "nonneg": st.one_of(st.floats(max_value=-1e-9), _nonfinite, _junk),
    "real": st.one_of(_nonfinite, _junk),
}


@st.composite
def _bad_array(draw, valid, free=()):
    arr = np.array(valid, dtype=float)
    how = draw(st.sampled_from(["nonfinite", "extra_dim", "drop_dim", "resize", "junk"]))
    if how == "nonfinite":
        arr = arr.copy()
        arr.flat[draw(st.integers(0, arr.size - 1))] = draw(_nonfinite)
        return arr
    if how == "extra_dim":
        return arr[..., None] if arr.ndim else arr.reshape(1, 1)
    if how == "drop_dim":
        return arr.reshape(-1)[0] if arr.ndim <= 1 else arr[..., 0]
    if how == "resize":
        fixed = [a for a in range(arr.ndim) if a not in free]
        if not fixed:
            return "abc"
        axis = draw(st.sampled_from(fixed))
        return np.concatenate([arr, arr.take([0], axis=axis)], axis=axis) if arr.ndim else arr.reshape(1)
    return draw(st.sampled_from(["abc", None, object()]))


@st.composite
def malformed_call(draw):
    name = draw(st.sampled_from(sorted(CASES)))
    case = CASES[name]
    arg = draw(st.sampled_from(sorted(case.kinds)))
    kind = case.kinds[arg]
    valid = case.valid[arg]
    if kind == "choice":
        value = draw(st.one_of(st.text(max_size=6).filter(lambda v: v != valid), st.integers(), st.none()))
    elif kind == "array":
        value = draw(_bad_array(valid, case.free.get(arg, ())))
    else:
        value = draw(_STRATEGIES[kind])
    return name, arg, value


def _accepts_choice(case: Case, arg: str, value) -> bool:
    """A drawn string may happen to be another valid choice: try it on a copy of the call."""
    try:
        case.fn(**{**case.valid, arg: value})
    except (ValueError, TypeError):
        return False
    return True


def test_valid_arguments_are_accepted():
    for name, case in CASES.items():
        case.fn(**case.valid)


@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(malformed_call())
def test_one_malformed_argument_is_named(call):
    name, arg, value = call
    case = CASES[name]
    try:
        with torch.no_grad():
            result = case.fn(**{**case.valid, arg: value})
    except (ValueError, TypeError) as err:
        names = case.linked if arg in case.linked else (arg,)
        assert any(a in str(err) for a in names), \
            f"{name}({arg}={value!r}) raised {type(err).__name__} not naming {arg!r}: {err}"
        return
    if case.kinds[arg] == "choice" and isinstance(value, str):
        return                                   # another valid choice (checked by the call above)
    pytest.fail(f"{name}({arg}={value!r}) was accepted: {type(result).__name__}")
