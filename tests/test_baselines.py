"""Uncertainty baselines (maximum sequence probability, mean token entropy, P(True)): the metrics by hand, and the
signals on zoo:llava against a plain loop of forwards that uses the model and its processor and no vrprobe code."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from vrprobe.analyses.signals.baselines import (
    COLUMNS,
    SIGNALS,
    TRUTH_WORDS,
    answer_distributions,
    compute,
    follow_up,
    truth_tokens,
)
from vrprobe.data import load_dataset
from vrprobe.errors import VrprobeError
from vrprobe.metrics.uncertainty import (
    mean_token_entropy,
    p_true,
    sequence_nll,
    sequence_probability,
    token_entropies,
)
from vrprobe.registry import load_adapter
from vrprobe.scoring.evaluate import score_batch

from numerics import FORWARD, assert_close

LOG = math.log
INF = math.inf


def test_sequence_probability_by_hand():
    assert_close(sequence_nll([LOG(0.5), LOG(0.25)]), LOG(8), dtype=torch.float64)
    assert_close(sequence_probability([LOG(0.5), LOG(0.25)]), 0.125, dtype=torch.float64)
    assert sequence_nll([0.0]) == 0.0 and sequence_probability([0.0]) == 1.0  # a certain token
    assert sequence_nll([LOG(0.5), -INF]) == INF and sequence_probability([-INF]) == 0.0
    assert math.isnan(sequence_nll([])) and math.isnan(sequence_probability(torch.empty(0)))
    assert sequence_probability([-800.0, -10.0]) == math.exp(-810.0)  # float64: no underflow at this size


def test_token_entropy_by_hand():
    rows = torch.tensor([[0.25] * 4, [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]]).log()  # 0 → −inf
    assert_close(token_entropies(rows), [LOG(4), 0.0, LOG(2)], dtype=torch.float32)
    assert_close(mean_token_entropy(rows[:2]), LOG(4) / 2, dtype=torch.float32)
    assert math.isnan(mean_token_entropy(torch.empty(0, 4)))
    assert token_entropies(torch.empty(0, 4)).shape == (0,)
    with pytest.raises(ValueError, match=r"\[n, V\]"):
        token_entropies(torch.zeros(4))


def test_p_true_by_hand():
    assert_close(p_true([LOG(0.6)], [LOG(0.2)]), 0.75, dtype=torch.float64)
    assert_close(p_true([LOG(0.3), LOG(0.3)], [LOG(0.2)]), 0.75, dtype=torch.float64)  # "True" + "true"
    assert_close(p_true([3.0], [2.0]), 1 / (1 + math.exp(-1)), dtype=torch.float64)  # logits: the same ratio
    # no underflow; operands of magnitude 1000 round at 1000·eps
    assert_close(p_true([-1000.0], [-1001.0]), 1 / (1 + math.exp(-1)), dtype=torch.float64, scale=1000.0)
    assert p_true([0.0], [-INF]) == 1.0 and p_true([-INF], [0.0]) == 0.0
    assert math.isnan(p_true([-INF], [-INF])) and math.isnan(p_true([], [0.0]))


def test_signals_declare_orientation_and_cost():
    assert COLUMNS == ("msp", "token_entropy", "p_true")
    assert [s.higher_is_reliable for s in SIGNALS] == [True, False, True]
    assert all(s.forwards == 1.0 and s.backwards == 0 and not s.causal and not s.needs_labels for s in SIGNALS)


# ---- on zoo:llava, against a plain loop ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llava():
    return load_adapter("zoo:llava")


@pytest.fixture(scope="module")
def scored(llava):
    samples = load_dataset("easy-vqa:test", limit=8).samples
    return samples, score_batch(llava, samples, hidden=True)


@torch.no_grad()
def plain_answer(adapter, sample, question: str, answer: str) -> tuple[list[int], torch.Tensor]:
    """The answer's token ids and the next-token log-softmax [n, V] at each of them, from one forward of LLaVA's
    prompt written out, then the answer: `model(**processor(...)).logits` and nothing of vrprobe."""
    tok = adapter.processor.tokenizer
    inputs = adapter.processor(
        text=[f"USER: <image>\n{question} ASSISTANT: {answer}"], images=[sample.load_image()], return_tensors="pt"
    )
    ids = tok(answer, add_special_tokens=False)["input_ids"]
    n = len(ids)
    assert inputs["input_ids"][0, -n:].tolist() == ids
    logits = adapter.model(**inputs).logits[0, -n - 1 : -1]
    return ids, logits.float().log_softmax(-1)


@pytest.mark.filterwarnings("ignore:.*no single token for True/False")
def test_msp_and_token_entropy_match_a_plain_loop(llava, scored):
    """msp = exp of the predicted candidate's summed token log-likelihood, the prediction being the argmax over every
    candidate scored by its own forward; token_entropy = the mean entropy along that candidate's tokens."""
    samples, records = scored
    rows = compute(llava, samples, records)
    assert [sorted(r) for r in rows] == [sorted(COLUMNS)] * len(samples)
    for s, rec, row in zip(samples, records, rows, strict=True):
        plain = {c: plain_answer(llava, s, s.text, c) for c in s.choices}
        loglik = {c: float(lp[torch.arange(len(ids)), ids].sum()) for c, (ids, lp) in plain.items()}
        best = max(loglik, key=loglik.__getitem__)
        assert best == rec["predicted"]
        assert_close(row["msp"], math.exp(loglik[best]), dtype=torch.float32, scale=1.0, ulps=FORWARD, what="msp")
        entropy = float((-(plain[best][1].exp() * plain[best][1]).sum(-1)).mean())
        assert_close(row["token_entropy"], entropy, dtype=torch.float32, scale=1.0, ulps=FORWARD, what="entropy")
        # not the candidate-normalised confidence: msp leaves out the mass outside the candidates
        assert row["msp"] <= rec["confidence"] + 1e-6


def test_p_true_matches_a_plain_loop(llava, scored):
    """The zoo's word-level tokenizer knows neither "true" nor "false": P(True) says so and reads yes/no, from the
    follow-up prompt with the image, = p(yes) / (p(yes) + p(no)) of a plain forward."""
    samples, records = scored
    with pytest.warns(UserWarning, match="no single token for True/False"):
        true_ids, false_ids, line = truth_tokens(llava)
    assert line == TRUTH_WORDS[1][2]
    tok = llava.processor.tokenizer
    assert true_ids == [tok.convert_tokens_to_ids("yes")] and false_ids == [tok.convert_tokens_to_ids("no")]
    with pytest.warns(UserWarning, match="P\\(True\\) reads"):
        rows = compute(llava, samples, records)
    for s, rec, row in zip(samples, records, rows, strict=True):
        assert 0.0 <= row["p_true"] <= 1.0
        text = follow_up(s.question, rec["predicted"], line)
        inputs = llava.processor(
            text=[f"USER: <image>\n{text} ASSISTANT:"], images=[s.load_image()], return_tensors="pt"
        )
        with torch.no_grad():
            probs = llava.model(**inputs).logits[0, -1].float().softmax(-1)
        yes, no = float(probs[true_ids[0]]), float(probs[false_ids[0]])
        assert_close(row["p_true"], yes / (yes + no), dtype=torch.float32, scale=1.0, ulps=FORWARD, what="p_true")


@pytest.mark.filterwarnings("ignore:.*no single token for True/False")
def test_multi_token_answers_match_a_plain_loop(llava, scored):
    """Answers of several tokens (and one of none), batched with one-token ones: the first row from the clean
    forward's last hidden state, the later rows from the teacher-forced forward, each equal to the plain loop's."""
    samples, records = scored
    answers = ["red circle", "blue", "is the circle red", ""]
    recs = [{**r, "predicted": a} for r, a in zip(records, answers, strict=False)]
    dists = answer_distributions(llava, samples[:4], recs)
    assert [len(d.ids) for d in dists] == [2, 1, 4, 0]
    for s, a, d in zip(samples[:3], answers, dists, strict=False):
        ids, lp = plain_answer(llava, s, s.text, a)
        assert list(d.ids) == ids
        assert_close(d.log_probs.exp(), lp.exp(), scale=1.0, ulps=FORWARD, what=f"answer {a!r}")
    assert dists[3].log_probs.shape == (0, llava.model.get_output_embeddings().weight.shape[0])
    rows = compute(llava, samples[:4], recs)
    assert math.isnan(rows[3]["msp"]) and math.isnan(rows[3]["token_entropy"])


def test_needs_hidden_records(llava, scored):
    samples, records = scored
    bare = [{k: v for k, v in r.items() if k != "hidden_last"} for r in records[:2]]
    with pytest.raises(VrprobeError, match="hidden=True"):
        answer_distributions(llava, samples[:2], bare)
    with pytest.raises(VrprobeError, match="2 samples but 1 records"):
        compute(llava, samples[:2], records[:1])
    assert compute(llava, [], []) == []


def test_open_ended_msp_is_the_records_confidence(adapter):
    """Open-ended (no choices): the greedy answer's msp is the clean record's sequence-probability confidence (EOS
    excluded), on every zoo family; the columns lie in their ranges."""
    samples = [dataclasses.replace(s, choices=None) for s in load_dataset("easy-vqa:test", limit=4).samples]
    records = score_batch(adapter, samples, hidden=True)
    with pytest.warns(UserWarning):  # the zoo tokenizers: P(True) reads yes/no
        rows = compute(adapter, samples, records)
    for rec, row in zip(records, rows, strict=True):
        assert_close(row["msp"], rec["confidence"], dtype=adapter.dtype, scale=1.0, ulps=FORWARD, what="msp")
        assert row["token_entropy"] >= 0.0 and 0.0 <= row["p_true"] <= 1.0
