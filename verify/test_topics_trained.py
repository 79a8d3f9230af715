"""Claims: fitted and trained one-layer masked-LM models on LDA data and on real text
(docs/topics.md §4.4-§4.6, §5, §7).

Runs come from :func:`mechverify.training.topics.runs` (cached; served by the ``configs`` and
``get_run`` fixtures of verify/conftest.py): L-BFGS fits of W^V, of the embedding and of the
attention scores on exact sufficient statistics of the model's loss, Adam training of the full
model for the two-stage claim, and the real-text panel.  The
reference numbers of the spec (c* = 5.68, 5.77, 1.54 ...) are our reconstruction; the
qualitative statements (block W^V, same-topic embeddings and attention, two stages) are the
paper's.  Claims that assert those reconstructed numbers carry provenance "reconstructed"
(value-block, embedding-structure, attention-structure); topics/bert-wikipedia keeps the
spec's only tag, "paper", for the paper's statement, measured here on a substitute corpus and
model (see its docstring).  A claim that does not hold at ``--scale quick`` is a strict xfail with the numbers.
"""

import numpy as np
import pytest

from mechverify.theory.tasks.topics import token_topic
from mechverify.training import topics
from mechverify.training.topics import (attention_by_category, column_contrasts, diagonal_vs_same_topic,
                                        embedding_statistics, label_topic_gap, real_text_statistics, score_categories,
                                        heldout_loss)
from mechverify.training.gates import closed_gap, combine, fit_gate, plateau_gate

PAPER = "li-li-risteski-2023"
pytestmark = pytest.mark.trained

# Findings at --scale quick (seed 0); strict, so a change that makes them pass gets looked at.
# attention-structure: no finding at --scale quick.  Its S fit stops at the L-BFGS iteration cap
# still moving (last relative loss change 2.4e-5 > the gate's 1e-5), so the claim is
# inconclusive there; measured on that fit: gap 1.25 < 1.3, [MASK]-row sd 0.136, train loss
# 3.281 but held-out 3.321.
ATTENTION_STRUCTURE_FINDINGS = {
    "paper": ("S fitted on 20k documents, 600 L-BFGS iterations, gate met at training seeds 0-2: held-out "
              "loss 3.301-3.316 (asked <= 3.316), but at each seed one of the other two conditions fails: "
              "gap 2.303, 2.345, 2.102 (two above the [1.3, 2.3] asked) and [MASK]-row topic-mean sd 0.773, "
              "0.011, 0.535 (two not < 0.1: the fitted [MASK] query attends by topic)"),
}
TWO_STAGE_FINDINGS = {
    "paper": ("20 epochs of Adam (10k documents), gate met at training seeds 0-2 (held-out loss closes 1.08-1.11 "
              "of the gap to the stage-1 optimum): the attention gap reaches half its final change "
              "first (t_A = 40-235 steps against t_V = 1945-2405 over the three sigmas and seeds), because "
              "that final change is small (gap 0.09-0.37) and made early; the entropy ratio falls to "
              "0.46-0.54 before t_V"),
    "quick": ("5 epochs of Adam (5k documents): t_A > t_V holds for every sigma (t_V, t_A = 70/270, "
              "70/225, 55/190 for sigma = 1e-3, 1e-2, 1e-1) but t_A/t_V = 3.86, 3.21, 3.45 is not "
              "decreasing, and the attention entropy leaves log(n_keys) before t_V (min ratio 0.955, "
              "0.939, 0.872; it settles near 0.55 before the topic gap grows); the W^V contrast only "
              "reaches 1.4-1.8 of c* = 5.67 in 5 epochs"),
}


@pytest.fixture(scope="module")
def value_runs(configs, get_run):
    """(T, alpha) -> ((model, payload), config) of the W^V fits."""
    return {(c.setting.n_topics, c.setting.alpha): (get_run(name), c)
            for name, c in configs.items() if name.startswith("value_")}


@pytest.fixture(scope="module")
def attention_run(configs, get_run):
    return get_run("attention"), configs["attention"]


@pytest.mark.claim(id="topics/value-block", paper=PAPER, provenance="reconstructed", kind="trained")
@pytest.mark.parametrize("key", [(10, 0.1), (10, 0.5), (5, 0.1)])
def test_value_block(record_claim, value_runs, key):
    """W^V fitted under frozen uniform attention (one-hot inputs, identity decoder, L-BFGS on
    10k documents) is topic-block-structured: every column contrast D_j > 0 and mean_j D_j
    within 10% of the theory's c* for (T, alpha) = (10, 0.1), (10, 0.5), (5, 0.1); on the default
    setting the held-out loss (model forward, 2k documents) lies in [3.36, 3.41]."""
    (model, payload), config = value_runs[key]
    gate = fit_gate(payload["train_loss"])          # the L-BFGS fit reached its optimum
    record_claim.gate(gate.passed, **gate.as_kwargs())
    s = config.setting
    D = column_contrasts(payload["W"].numpy(), s.n_topics, s.words_per_topic)
    c_star = s.c_star()
    rel = abs(D.mean() - c_star) / c_star
    detail = {"T": s.n_topics, "alpha": s.alpha, "mean_D": float(D.mean()), "sd_D": float(D.std()),
              "min_D": float(D.min()), "c_star": c_star}
    if key == (10, 0.1):
        detail["heldout_loss"] = heldout_loss(model, s)
        detail["train_loss"] = float(payload["train_loss"][-1])
    record_claim(rel, 0.10, detail=detail)
    assert D.min() > 0 and rel <= 0.10, detail
    if key == (10, 0.1):
        assert 3.36 <= detail["heldout_loss"] <= 3.41, detail


@pytest.mark.claim(id="topics/value-diag-eq-sametopic", paper=PAPER, provenance="reconstructed", kind="trained")
def test_value_diag_eq_sametopic(record_claim, value_runs):
    """Column-centred W^V (default fit): mean diagonal and mean same-topic off-diagonal entry
    differ by less than 0.1 c*."""
    (_, payload), config = value_runs[(10, 0.1)]
    gate = fit_gate(payload["train_loss"])
    record_claim.gate(gate.passed, **gate.as_kwargs())
    diag, same = diagonal_vs_same_topic(payload["W"].numpy(), 10, 10)
    tol = 0.1 * config.setting.c_star()
    record_claim(abs(diag - same), tol, detail={"diagonal": diag, "same_topic": same})
    assert abs(diag - same) < tol


@pytest.mark.claim(id="topics/embedding-structure", paper=PAPER, provenance="reconstructed", kind="trained")
def test_embedding_structure(record_claim, configs, get_run):
    """Embedding E (d = 16) fitted with tied decoder, W^V = I, uniform attention: same-topic
    minus cross-topic mean inner product within 15% of c*; mean cosine same-topic > 0.6 and
    cross-topic < 0.05; for >= 95% of words the worst same-topic partner has a larger inner
    product than the best cross-topic word."""
    config = configs["embedding_d16"]
    _, payload = get_run("embedding_d16")
    gate = fit_gate(payload["train_loss"])
    record_claim.gate(gate.passed, **gate.as_kwargs())
    st = embedding_statistics(payload["E"].numpy()[4:], token_topic(10, 10)[4:])
    c_star = config.setting.c_star()
    rel = abs(st["contrast"] - c_star) / c_star
    record_claim(rel, 0.15, detail={**st, "c_star": c_star})
    assert rel <= 0.15 and st["same_cos"] > 0.6 and st["cross_cos"] < 0.05 and st["separated_fraction"] >= 0.95, st


@pytest.mark.claim(id="topics/embedding-rank-limited", paper=PAPER, provenance="reconstructed", kind="trained")
def test_embedding_rank_limited(record_claim, configs, get_run):
    """Embedding width d in {2, 4, 8, 16} (T = 10): record the same-minus-cross contrast and the
    training loss.  Asserted: with d < T the Gram matrix cannot hold T orthogonal topic
    directions, so the fitted loss is above the d = 16 loss (which reaches the block optimum
    within 0.01)."""
    rows, gates = {}, {}
    for name in (n for n in configs if n.startswith("embedding_")):
        d = configs[name].d
        _, payload = get_run(name)
        gates[f"d={d}"] = fit_gate(payload["train_loss"])
        st = embedding_statistics(payload["E"].numpy()[4:], token_topic(10, 10)[4:])
        rows[d] = {"contrast": st["contrast"], "same_cos": st["same_cos"], "loss": float(payload["train_loss"][-1])}
    gate = combine(gates)                            # every fit reached its optimum
    record_claim.gate(gate.passed, **gate.as_kwargs())
    excess = min(rows[d]["loss"] for d in (2, 4, 8)) - rows[16]["loss"]
    record_claim(-excess, 0.0, detail=rows)
    assert excess > 0, rows


@pytest.mark.claim(id="topics/attention-structure", paper=PAPER, provenance="reconstructed", kind="trained",
                   findings=ATTENTION_STRUCTURE_FINDINGS)
def test_attention_structure(record_claim, attention_run):
    """Stage 2 (W^V frozen at c* (I_T (x) J_v), S fitted from 0 by L-BFGS on 6k documents):
    row-centred same-topic minus cross-topic gap of word queries in [1.3, 2.3]; held-out loss
    (model forward, 2k documents) >= 0.05 nats below 3.366; [MASK]-row topic-mean sd < 0.1."""
    (model, payload), config = attention_run
    gate = fit_gate(payload["train_loss"])          # S fitted to its optimum on the training documents
    record_claim.gate(gate.passed, **gate.as_kwargs())
    cats = score_categories(payload["S"].numpy(), 10, 10)
    loss = heldout_loss(model, config.setting)
    detail = {**cats, "heldout_loss": loss, "train_loss": float(payload["train_loss"][-1])}
    record_claim(abs(cats["gap"] - 1.8), 0.5, detail=detail)
    assert 1.3 <= cats["gap"] <= 2.3, detail
    assert loss <= 3.366 - 0.05, detail
    assert cats["mask_topic_sd"] < 0.1, detail


@pytest.mark.claim(id="topics/attention-ratio", paper=PAPER, provenance="paper-code", kind="trained")
def test_attention_ratio(record_claim, attention_run):
    """The official code's protocol on 200 held-out documents (word queries, visible keys):
    average attention on same-topic (other token) keys over cross-topic keys exceeds 2."""
    (model, payload), config = attention_run
    gate = fit_gate(payload["train_loss"])
    record_claim.gate(gate.passed, **gate.as_kwargs())
    _, masked = config.setting.data("test")
    cats = attention_by_category(model, masked.inputs[:200], masked.key_visible[:200], token_topic(10, 10))
    ratio = cats["same_topic"] / cats["cross_topic"]
    record_claim(2.0 / ratio, 1.0, detail={**cats, "ratio": ratio})
    assert ratio > 2, cats


@pytest.mark.claim(id="topics/no-keep-no-topic-attention", paper=PAPER, provenance="reconstructed", kind="trained")
def test_no_keep_no_topic_attention(record_claim, configs, get_run):
    """Ablation: every selected position becomes [MASK] (p_keep = p_random = 0); S and W^V fitted
    jointly from 0 (6k documents).  The topic gap of the attention at masked test positions
    (row-centred score of keys in the label's topic minus other keys) is below 0.2 in absolute
    value, while mean_j D_j of W^V stays within 10% of c*."""
    config = configs["ablation"]
    model, payload = get_run("ablation")
    gate = fit_gate(payload["train_loss"])
    record_claim.gate(gate.passed, **gate.as_kwargs())
    gap = label_topic_gap(model, config.setting)
    D = column_contrasts(payload["W"].numpy(), 10, 10)
    c_star = config.setting.c_star()
    detail = {"label_topic_gap": gap, "mean_D": float(D.mean()), "min_D": float(D.min()), "c_star": c_star}
    record_claim(abs(gap), 0.2, detail=detail)
    assert abs(gap) < 0.2 and abs(D.mean() - c_star) <= 0.1 * c_star, detail


def _half_step(steps, curve) -> int:
    curve = np.asarray(curve, dtype=float)
    return int(steps[int(np.argmax(curve - curve[0] >= 0.5 * (curve[-1] - curve[0])))])


@pytest.mark.claim(id="topics/two-stage", paper=PAPER, provenance="paper", kind="trained", findings=TWO_STAGE_FINDINGS)
def test_two_stage(record_claim, configs, get_run, value_runs):
    """Full model (W^Q, W^K, W^V trained by Adam, lr 0.01, batch 40) from zero_init_attn with
    sigma in {1e-3, 1e-2, 1e-1}: t_A > t_V for every sigma (steps where the W^V contrast and the
    word-query attention gap first reach 50% of their final change); t_A/t_V decreases as sigma
    grows; up to t_V the attention entropy stays within 1% of log(n_keys).

    Gate: every run's held-out loss closes >= 90 % of the gap from its initial model to the
    stage-1 optimum (the fitted W^V under uniform attention, ``topics/value-block``'s default
    fit, scored on the same held-out documents).  Short of that, the "final change" that
    defines t_V and t_A is the change of a run still in its first stage."""
    rows, gates = {}, {}
    (value_model, _), _ = value_runs[(10, 0.1)]
    for name in (n for n in configs if n.startswith("two_stage_")):
        config = configs[name]
        sigma = config.sigma
        model, p = get_run(name)
        gates[f"sigma={sigma:g}"] = closed_gap(heldout_loss(model, config.setting),
                                              heldout_loss(topics.build_two_stage(config), config.setting),
                                              heldout_loss(value_model, config.setting),
                                              names=("initial", "stage1_optimum"))
        steps = p["log_steps"].numpy()
        t_v, t_a = _half_step(steps, p["contrast"]), _half_step(steps, p["gap"])
        stage1 = p["entropy"].numpy()[steps <= t_v]
        rows[sigma] = {"t_V": t_v, "t_A": t_a, "ratio": t_a / max(t_v, 1), "min_entropy_stage1": float(stage1.min()),
                       "final_contrast": float(p["contrast"][-1]), "final_gap": float(p["gap"][-1])}
    gate = combine(gates)
    record_claim.gate(gate.passed, **gate.as_kwargs())
    sigmas = sorted(rows)
    ratios = [rows[s]["ratio"] for s in sigmas]
    worst_entropy = min(rows[s]["min_entropy_stage1"] for s in sigmas)
    record_claim(1 - worst_entropy, 0.01, detail=rows)
    assert all(rows[s]["t_A"] > rows[s]["t_V"] for s in sigmas), rows
    assert all(a > b for a, b in zip(ratios, ratios[1:])), rows
    assert worst_entropy >= 0.99, rows


@pytest.mark.claim(id="topics/bert-wikipedia", paper=PAPER, provenance="paper", kind="trained")
def test_real_text_panel(record_claim, configs, get_run):
    """Replaces the paper's BERT/Wikipedia measurement (no download, no pretrained weights):
    the one-layer MLM (trained embedding d = 32, tied decoder, trained attention) on windows
    of the standard library's pydoc_data documentation, topics by scikit-learn LDA (10 topics,
    words with p(topic | word) >= 0.5).  Same-topic mean embedding cosine exceeds the
    cross-topic mean, and the average attention on same-topic keys (other tokens) exceeds that
    on cross-topic keys (held-out windows, the official code's binning)."""
    config = configs["real_text"]
    model, payload = get_run("real_text")
    # Gate: no Bayes predictor for real text, so the run must at least have stopped improving.
    gate = plateau_gate(payload["loss"])
    record_claim.gate(gate.passed, **gate.as_kwargs())
    st = real_text_statistics(config, model, payload)
    emb, att = st["embedding"], st["attention"]
    detail = {"same_cos": emb["same_cos"], "cross_cos": emb["cross_cos"], "same_topic_attn": att["same_topic"],
              "cross_topic_attn": att["cross_topic"], "n_topic_words": st["n_topic_words"]}
    record_claim(max(emb["cross_cos"] - emb["same_cos"], att["cross_topic"] - att["same_topic"]), 0.0, detail=detail)
    assert emb["same_cos"] > emb["cross_cos"] and att["same_topic"] > att["cross_topic"], detail
