"""POPE's own metrics (object hallucination, yes/no questions), computed as the POPE paper's `evaluate.py` does.

Reference: Li et al., "Evaluating Object Hallucination in Large Vision-Language Models" (EMNLP 2023), the repository
RUCAIBox/POPE, `evaluate.py`. "yes" is the positive class. lmms-eval's POPE task differs in two places, both noted
where they matter: its `yes_ratio` is the share of *reference* answers that are yes (0.5 on every POPE split by
construction), and it reports 0 where a ratio is 0/0; here, as in the paper, `yes_ratio` is the share of *predicted*
yes, and a 0/0 ratio is NaN (undefined, never silently 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

POPE_KEYS = ("precision", "recall", "f1", "yes_ratio")
"""The keys `vrprobe.eval` adds to `summary.json` for a POPE dataset (its `accuracy` is already there, the same number
for yes/no predictions)."""

POPE_DEFINITIONS = {
    "precision (POPE)": "TP / (TP + FP), 'yes' the positive class: of the questions answered yes, the share whose "
    "object is in the image; NaN when no answer is yes",
    "recall (POPE)": "TP / (TP + FN): of the questions whose object is in the image, the share answered yes; NaN "
    "when no reference answer is yes",
    "f1 (POPE)": "2 · precision · recall / (precision + recall); 0 when TP = 0 with both ratios defined, NaN when "
    "either is NaN",
    "yes_ratio (POPE)": "(TP + FP) / N, the share of predicted answers that are yes (the paper's definition; "
    "lmms-eval reports the share of reference yes instead)",
    "POPE answer reading": "a predicted text is 'no' when its first sentence (up to the first '.'), commas removed "
    "and split on spaces, contains the word 'No', 'no' or 'not'; else 'yes' (POPE's evaluate.py)",
}


def pope_answer(text: str) -> str:
    """POPE's reading of a free-text answer as "yes" or "no" (RUCAIBox/POPE `evaluate.py`).

    Keep the first sentence (the text before the first "."), delete commas, split on single spaces; the answer is "no"
    when one of the words is exactly "No", "no" or "not", else "yes" (so "" → "yes", "NO" → "yes", "No." → "no",
    "There is not a dog" → "no"). Closed-set predictions "yes"/"no" map to themselves.
    """
    first = text.split(".")[0]
    words = first.replace(",", "").split(" ")
    return "no" if any(w in ("No", "no", "not") for w in words) else "yes"


def pope_counts(predicted: Sequence[str], labels: Sequence[str]) -> dict[str, int]:
    """Confusion counts `tp`, `fp`, `tn`, `fn` with "yes" positive.

    A prediction is read by `pope_answer`; a label is negative when it is "no" (case and surrounding space ignored)
    and positive otherwise, as POPE's `evaluate.py` maps labels. Raises `ValueError` when the lengths differ.
    """
    if len(predicted) != len(labels):
        raise ValueError(f"{len(predicted)} predictions for {len(labels)} labels")
    counts = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    for p, label in zip(predicted, labels, strict=True):
        pred_yes = pope_answer(str(p)) == "yes"
        label_yes = str(label).strip().lower() != "no"
        counts[("t" if pred_yes == label_yes else "f") + ("p" if pred_yes else "n")] += 1
    return counts


def ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def pope_metrics(predicted: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """POPE's metrics of predicted answers against reference labels, "yes" the positive class.

    With TP, FP, TN, FN from `pope_counts` (predictions read by `pope_answer`) and N = TP + FP + TN + FN:

    - `precision` = TP / (TP + FP); NaN when no prediction is yes (0/0; POPE's code divides by zero there).
    - `recall` = TP / (TP + FN); NaN when no label is yes.
    - `f1` = 2 · precision · recall / (precision + recall); 0 when precision = recall = 0 (TP = 0 while both are
      defined: the harmonic mean's limit), NaN when either is NaN.
    - `yes_ratio` = (TP + FP) / N, the share of *predictions* that are yes (POPE's definition); NaN when N = 0.
    - `accuracy` = (TP + TN) / N; NaN when N = 0.

    All values are fractions in [0, 1] (POPE prints them the same way); raises `ValueError` when the lengths differ.
    """
    c = pope_counts(predicted, labels)
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    n = tp + fp + tn + fn
    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    if math.isnan(precision) or math.isnan(recall):  # f1 undefined
        f1 = float("nan")
    elif precision + recall == 0:  # exact: both are 0/den with tp = 0
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": ratio(tp + fp, n),
        "accuracy": ratio(tp + tn, n),
    }


def pope_summary(records: Sequence[Mapping[str, Any]], benchmarks: Sequence[Any]) -> dict[str, float]:
    """`precision`, `recall`, `f1`, `yes_ratio` (`pope_metrics`) of eval records — `predicted` against the first
    reference answer — when every sample's benchmark (`benchmarks`, one per sample: `Sample.meta["benchmark"]`) is
    "pope"; `{}` otherwise (no sample, or another benchmark among them)."""
    if not benchmarks or any(b != "pope" for b in benchmarks):
        return {}
    metrics = pope_metrics([str(r["predicted"]) for r in records], [str(r["answers"][0]) for r in records])
    return {k: metrics[k] for k in POPE_KEYS}
