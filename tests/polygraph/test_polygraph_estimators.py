"""vrprobe's uncertainty baselines against lm-polygraph 0.7.0's estimators (`make test-polygraph`, in .venv-polygraph).

lm-polygraph's estimators return *uncertainties* (higher = less certain): `MaximumSequenceProbability` = −Σ log p
= −log msp, `MeanTokenEntropy` = token_entropy, `PTrue` = −(score of the "true" token), `SemanticEntropy` and
`EigenScore` the same orientation as vrprobe's. Each test feeds an estimator the stats dict it reads (keys from its
source), built from vrprobe's outputs on zoo:llava or, for the sampling metrics, from synthetic numbers, and compares.

Two tests also run lm-polygraph's own visual stat calculators on the zoo model. What they showed of 0.7.0's visual
path (`VisualWhiteboxModel`): its generation `scores` are the raw logits, not the log-softmax its text
`WhiteboxModel` stores (so the tests log-softmax them; a no-op on log-probabilities), its greedy statistics include
the EOS token (vrprobe's answer excludes it), its hidden states are `torch.randn` placeholders (so no embedding
statistic, EigenScore's included, is read from it here), and `PromptVisualCalculator` formats its P(True) prompt but
feeds the model the original input texts (so the test passes the follow-up prompt as the input text).

Not part of `make test`: skipped where lm-polygraph is not installed (its dependency list is heavy).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

pytest.importorskip(
    "lm_polygraph", reason="lm-polygraph is not installed: `make test-polygraph` runs these in .venv-polygraph"
)

from lm_polygraph.estimators import (  # noqa: E402
    EigenScore,
    MaximumSequenceProbability,
    MeanTokenEntropy,
    PTrue,
    SemanticEntropy,
)
from lm_polygraph.model_adapters.visual_whitebox_model import VisualWhiteboxModel  # noqa: E402
from lm_polygraph.stat_calculators.entropy import EntropyCalculator  # noqa: E402
from lm_polygraph.stat_calculators.greedy_visual_probs import GreedyProbsVisualCalculator  # noqa: E402
from lm_polygraph.stat_calculators.prompt_visual import PromptVisualCalculator  # noqa: E402

from vrprobe.analyses.signals.baselines import answer_distributions, compute, follow_up, truth_tokens  # noqa: E402
from vrprobe.data import load_dataset  # noqa: E402
from vrprobe.metrics.sampling import eigenscore, semantic_entropy  # noqa: E402
from vrprobe.registry import load_adapter  # noqa: E402
from vrprobe.scoring.evaluate import score_batch  # noqa: E402

from numerics import FORWARD, SUM, assert_close  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*no single token for True/False", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def llava():
    return load_adapter("zoo:llava")


def closed_and_open(adapter, limit: int = 8):
    samples = load_dataset("easy-vqa:test", limit=limit).samples
    return samples, [dataclasses.replace(s, choices=None) for s in samples]


@pytest.mark.parametrize("setting", ["closed", "open"])
def test_msp_and_mean_token_entropy(llava, setting):
    """Stats from vrprobe's answer distributions → lm-polygraph's MSP, EntropyCalculator and MeanTokenEntropy."""
    closed, open_ended = closed_and_open(llava)
    samples = closed if setting == "closed" else open_ended
    records = score_batch(llava, samples, hidden=True)
    dists = answer_distributions(llava, samples, records)
    rows = compute(llava, samples, records)
    stats = {
        "greedy_log_likelihoods": [d.token_logprobs.numpy() for d in dists],
        "greedy_log_probs": [list(d.log_probs.numpy()) for d in dists],
    }
    stats.update(EntropyCalculator()(stats))
    msp = MaximumSequenceProbability()(stats)
    entropy = MeanTokenEntropy()(stats)
    ours_nll = [-math.log(r["msp"]) for r in rows]
    ours_entropy = [r["token_entropy"] for r in rows]
    # float32 inputs summed in float32 by lm-polygraph, in float64 by vrprobe: one reduction apart
    assert_close(msp, ours_nll, dtype=torch.float32, ulps=SUM, what="MaximumSequenceProbability = −log msp")
    assert_close(entropy, ours_entropy, dtype=torch.float32, scale=1.0, ulps=SUM, what="MeanTokenEntropy")


def test_greedy_visual_calculator_end_to_end(llava):
    """lm-polygraph's own greedy generation on the zoo model (one sample per call: its batching concatenates
    unpadded inputs) against vrprobe's open-ended answers: the same tokens, and after dropping its EOS row, the
    same MSP and mean token entropy."""
    _, samples = closed_and_open(llava, limit=6)
    records = score_batch(llava, samples, hidden=True)
    rows = compute(llava, samples, records)
    dists = answer_distributions(llava, samples, records)
    model = VisualWhiteboxModel(llava.model, llava.processor)
    calc = GreedyProbsVisualCalculator(output_attentions=False, output_hidden_states=False)
    eos = llava.tokenizer.eos_token_id
    for s, row, d in zip(samples, rows, dists, strict=True):
        text = llava.prompt(llava.question_text(s))
        out = calc({"images": [s.load_image()]}, [text], model, max_new_tokens=10)
        tokens = out["greedy_tokens"][0]
        assert tokens == [*d.ids, eos]  # vrprobe's answer, then lm-polygraph's EOS
        logp = torch.as_tensor(out["greedy_log_probs"][0]).float().log_softmax(-1).numpy()[:-1]  # EOS row dropped
        stats = {"greedy_log_likelihoods": [logp[np.arange(len(d.ids)), list(d.ids)]], "greedy_log_probs": [list(logp)]}
        stats.update(EntropyCalculator()(stats))
        nll = float(MaximumSequenceProbability()(stats)[0])
        assert_close(nll, -math.log(row["msp"]), dtype=torch.float32, scale=1.0, ulps=FORWARD, what="MSP end to end")
        entropy = float(MeanTokenEntropy()(stats)[0])
        assert_close(entropy, row["token_entropy"], dtype=torch.float32, scale=1.0, ulps=FORWARD, what="entropy")


def test_p_true_through_the_prompt_calculator(llava):
    """lm-polygraph's prompt calculator reads the raw score of one expected token after the follow-up prompt;
    `PTrue` returns it negated. vrprobe's P(True) = sigmoid(score(true) − score(false)) = sigmoid(PTrue_false −
    PTrue_true), with the words `truth_tokens` picks (the zoo: yes / no)."""
    samples, _ = closed_and_open(llava)
    records = score_batch(llava, samples, hidden=True)
    rows = compute(llava, samples, records)
    true_ids, false_ids, line = truth_tokens(llava)
    assert len(true_ids) == len(false_ids) == 1  # lm-polygraph reads one token
    words = [llava.tokenizer.convert_ids_to_tokens(ids[0]) for ids in (true_ids, false_ids)]
    model = VisualWhiteboxModel(llava.model, llava.processor)
    for s, rec, row in zip(samples, records, rows, strict=True):
        text = llava.prompt(follow_up(s.question, rec["predicted"], line))
        deps = {"images": [s.load_image()], "input_texts": [s.question], "greedy_texts": [rec["predicted"]]}
        ue = []
        for word in words:
            calc = PromptVisualCalculator()  # Kadavath's prompt, "True": its visual path ignores the prompt
            calc.expected = word
            ue.append(float(PTrue()(calc(deps, [text], model))[0]))
        expected = 1.0 / (1.0 + math.exp(ue[0] - ue[1]))
        assert_close(row["p_true"], expected, dtype=torch.float32, scale=1.0, ulps=FORWARD, what="P(True)")


# ---- the sampling metrics (vrprobe.metrics.sampling) on synthetic numbers ------------------------------------------


def classes(texts, key=str.lower):
    """lm-polygraph's `semantic_classes_entail` for one input, with exact match after `key` in place of its NLI."""
    ids: dict[str, int] = {}
    sample_to_class = {i: ids.setdefault(key(t), len(ids)) for i, t in enumerate(texts)}
    class_to_sample = [[i for i, c in sample_to_class.items() if c == k] for k in range(len(ids))]
    return {"class_to_sample": [class_to_sample], "sample_to_class": [sample_to_class]}


def test_semantic_entropy_discrete():
    """Frequencies: lm-polygraph's −(1/N) Σ_i log(n_c(i)/N) is exactly the entropy of the cluster frequencies."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        texts = list(rng.choice(["red", "Red", "blue", "green", "BLUE", "teal"], size=int(rng.integers(1, 12))))
        ue = SemanticEntropy(class_probability_estimation="frequency")(
            {"sample_texts": [texts], "semantic_classes_entail": classes(texts)}
        )
        assert_close(semantic_entropy(texts, normalise=str.lower), float(ue[0]), dtype=np.float64, scale=1.0)


def test_semantic_entropy_from_likelihoods():
    """With likelihoods, lm-polygraph (`use_unique_responses`: each distinct string once, its first loglik) does not
    normalise over the clusters and averages −log q over the samples: equal to vrprobe's entropy when the clusters'
    q sum to 1 and their sample frequencies equal q ("mean"), or one sample per cluster ("direct")."""
    texts = ["red", "red", "Red", "blue"]  # red: {"red", "Red"}, q = 0.5 + 0.25 = 3/4 = its frequency; blue 1/4
    logliks = [math.log(0.5), -3.0, math.log(0.25), math.log(0.25)]  # the repeated "red" counts once, first loglik
    stats = {"sample_texts": [texts], "sample_log_probs": [logliks], "semantic_classes_entail": classes(texts)}
    mean = SemanticEntropy(use_unique_responses=True)(stats)
    assert_close(semantic_entropy(texts, logliks, normalise=str.lower), float(mean[0]), dtype=np.float64, scale=1.0)
    texts = ["red", "blue", "teal"]
    logliks = list(np.log([0.6, 0.3, 0.1]))
    stats = {"sample_texts": [texts], "sample_log_probs": [logliks], "semantic_classes_entail": classes(texts)}
    direct = SemanticEntropy(entropy_estimation="direct", use_unique_responses=True)(stats)
    assert_close(semantic_entropy(texts, logliks), float(direct[0]), dtype=np.float64, scale=1.0)


@pytest.mark.parametrize(("k", "d"), [(10, 32), (12, 5), (4, 4)])
def test_eigenscore(k, d):
    """Random embeddings, K ≤ D and K > D, and K identical rows. The eigenvalues of Σ + αI carry absolute error
    ~eps·λ_max, so their logs carry ~eps·λ_max/α (every eigenvalue is ≥ α): that is the comparison's scale."""
    rng = np.random.default_rng(k * 100 + d)
    cases = [rng.normal(size=(k, d)), rng.normal(size=(k, d)) * 10 + 3, np.tile(rng.normal(size=(1, d)), (k, 1))]
    for z in cases:
        for alpha in (1e-3, 0.5):
            ours = eigenscore(z, alpha)
            theirs = float(EigenScore(alpha=alpha)({"sample_embeddings": [z]})[0])
            centred = z - z.mean(1, keepdims=True)
            scale = (np.linalg.norm(centred, 2) ** 2 + alpha) / alpha
            assert_close(ours, theirs, dtype=np.float64, scale=scale, ulps=SUM, what=f"EigenScore K={k} D={d}")
