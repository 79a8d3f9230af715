"""Topic-structure benchmarks: the exact loss reductions used by the fits against the model's
own forward pass, and the hand-built value construction against the numpy block objective.

* value: ``TopicMLM`` forward loss of the value construction vs ``mechverify.theory.symbolic.topics``
  ``block_loss`` on the same masked documents (float64), with their difference;
* attention: the grouped (document, query id) statistics of ``mechverify.training.topics`` vs the forward
  pass of the attention construction, same documents, same loss up to floating point.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bench import table, time_rounds
from mechverify.constructions.topics import attention_construction, mlm_loss, value_construction
from mechverify.theory.symbolic.topics import block_loss, statistics_from
from mechverify.theory.tasks.topics import N_SPECIAL, mask_documents, sample_lda, token_topic
from mechverify.training.topics import masked_token_groups


def _grouped_attention_loss(groups, S: np.ndarray, c: float, T: int, v: int) -> float:
    query, counts, labels = groups
    with np.errstate(divide="ignore"):
        logits = np.log(counts) + S[query]
    a = np.exp(logits - logits.max(axis=1, keepdims=True))
    a /= a.sum(axis=1, keepdims=True)
    tt = token_topic(T, v)
    mass = np.stack([a[:, tt == t].sum(axis=1) for t in range(T)], axis=1)
    z = c * mass
    lse = np.log(np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1)) + z.max(axis=1)
    label_topics = labels.reshape(-1, T, v).sum(axis=2)
    return float(-(label_topics * (z - lse[:, None])).sum() / labels.sum() + math.log(v))


def run(quick: bool, emit) -> dict:
    reps = 3 if quick else 10
    record = {"value": {}, "attention": {}}
    rows_v, rows_a = [], []
    c, beta = 5.67, 1.8
    for n_docs in ((200, 1000) if quick else (1000, 5000)):
        corpus = sample_lda(n_docs, seed=0)
        m = mask_documents(corpus.tokens, corpus.vocab_size, seed=1)
        ids, vis, lab = (torch.from_numpy(a) for a in (m.inputs, m.key_visible, m.labels))
        model = value_construction(10, 10, c)
        stats = lambda: statistics_from(corpus.topics, m.selected, m.key_visible, 10, 10)
        with torch.no_grad():
            t = time_rounds({"forward": lambda: mlm_loss(model, ids, vis, lab),
                             "numpy": lambda: block_loss(c, stats())}, reps=reps)
            diff = abs(float(mlm_loss(model, ids, vis, lab)) - block_loss(c, stats()))
        ratio = t["forward"].best / t["numpy"].best
        record["value"][f"docs{n_docs}"] = {"forward_s": t["forward"].best, "numpy_s": t["numpy"].best,
                                            "forward_over_numpy": ratio, "abs_diff": diff}
        rows_v.append([str(n_docs), f"{t['forward'].best * 1e3:.1f}", f"{t['numpy'].best * 1e3:.1f}",
                       f"{ratio:.1f}", f"{diff:.1e}"])

        att = attention_construction(10, 10, c, beta)
        S = np.zeros((104, 104))
        S[N_SPECIAL:, N_SPECIAL:] = beta * np.kron(np.eye(10), np.ones((10, 10)))
        groups = lambda: masked_token_groups(corpus, m, 104)
        with torch.no_grad():
            t = time_rounds({"forward": lambda: mlm_loss(att, ids, vis, lab),
                             "grouped": lambda: _grouped_attention_loss(groups(), S, c, 10, 10)}, reps=reps)
            diff = abs(float(mlm_loss(att, ids, vis, lab)) - _grouped_attention_loss(groups(), S, c, 10, 10))
        ratio = t["forward"].best / t["grouped"].best
        record["attention"][f"docs{n_docs}"] = {"forward_s": t["forward"].best, "grouped_s": t["grouped"].best,
                                                "forward_over_grouped": ratio, "abs_diff": diff}
        rows_a.append([str(n_docs), f"{t['forward'].best * 1e3:.1f}", f"{t['grouped'].best * 1e3:.1f}",
                       f"{ratio:.1f}", f"{diff:.1e}"])
    emit("\nValue construction: TopicMLM forward loss vs numpy block objective (float64, T = 10, v = 10)")
    emit(table(["documents", "forward ms", "numpy ms", "forward/numpy", "|diff|"], rows_v))
    emit("\nAttention construction (beta = 1.8): forward loss vs grouped (document, query) statistics")
    emit(table(["documents", "forward ms", "grouped ms", "forward/grouped", "|diff|"], rows_a))
    return record
