"""The official VQA accuracy and its answer normalisation.

Reproduces `PythonEvaluationTools/vqaEvaluation/vqaEval.py` of the VQA API (GT-Vision-Lab/VQA, master):

- `normalize_answer`: `\\n`/`\\t` → space, strip, `processPunctuation`, then `processDigitArticle` (lower-case,
  number words `none`, `zero` … `ten` → digits, articles `a an the` dropped, the contraction table applied word by
  word). The punctuation set is the official one: ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` (no apostrophe,
  colon, `*`, `#`, `$`, `%`, `^`, `&`). Each mark is deleted when it touches a space in the input or when the input
  contains digit-comma-digit (so "1,000" → "1000"), and replaced by a space otherwise; then every period not followed
  by a digit is deleted ("yes." → "yes", "1.5" stays), at most 32 of them (the official code passes `re.UNICODE`,
  i.e. 32, as `re.sub`'s `count`).
- `vqa_accuracy`: with N human answers, `acc_i = min(1, #{j ≠ i: gt_j == pred} / 3)` and the score is the mean of
  `acc_i` over the N answers (for N = 10: the average of `min(1, matches / 3)` over the ten 9-answer subsets).

Ground truth: the official script applies only `processPunctuation` to the human answers, and only when they are not
all identical; it relies on the released annotations having been normalised at collection time. Here every human
answer goes through the full `normalize_answer`, exactly like the prediction (as lmms-eval does for disagreeing
answers). On the released annotations the two agree; on raw answers ("Two", "the dog.") ours still matches.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip
"""The official contraction table (keys with capitals, e.g. "Im", can never match after lower-casing; kept as is)."""

NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # the official regex; its `(?!<=\d)` is a no-op lookahead
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
OFFICIAL_PERIOD_COUNT = int(re.UNICODE)  # official: periodStrip.sub("", text, re.UNICODE) → count = 32


def process_punctuation(text: str) -> str:
    """The official `processPunctuation`: delete or space out the punctuation marks, then drop periods.

    A mark is deleted if it appears next to a space anywhere in `text` or if `text` contains digit-comma-digit;
    otherwise each occurrence becomes a space. Periods not followed by a digit are deleted (at most 32).
    """
    out = text
    has_digit_comma = COMMA_STRIP.search(text) is not None
    for p in PUNCTUATION:
        touches_space = p + " " in text or " " + p in text
        out = out.replace(p, "" if touches_space or has_digit_comma else " ")
    return PERIOD_STRIP.sub("", out, count=OFFICIAL_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """The official `processDigitArticle`: lower-case, split on whitespace, number words → digits, drop articles,
    apply the contraction table, join with single spaces."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def normalize_answer(text: str) -> str:
    """An answer in the official VQA evaluation's normal form (the prediction's processing in `vqaEval.py`):
    `\\n` and `\\t` → space, strip, `process_punctuation`, `process_digit_article`.

    Examples: "the dog." → "dog", "Two" → "2", "dont know" → "don't know", "1,000" → "1000", "a red car" → "red car".
    """
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The official VQA accuracy of `prediction` against the human `answers` (normally ten), in [0, 1].

    Both the prediction and every human answer are normalised with `normalize_answer`. For each answer i,
    `acc_i = min(1, (number of the other answers j ≠ i equal to the prediction) / 3)`; the result is the mean of `acc_i`
    over the answers present. With ten answers, k matches give 0, 0.3, 0.6, 0.9 for k = 0..3 and 1.0 for k ≥ 4.
    Fewer answers are allowed (the same leave-one-out mean; a single answer therefore always scores 0, as in the
    official code); no answers → 0.0.
    """
    if not answers:
        return 0.0
    pred = normalize_answer(prediction)
    matches = [normalize_answer(a) == pred for a in answers]
    total = sum(matches)
    return sum(min(1.0, (total - m) / 3) for m in matches) / len(matches)


def binary_correct(acc: float) -> float:
    """The binarised VQA correctness used for calibration: 1.0 if `acc` ≥ 0.5 (at least two matching humans out of
    ten, i.e. accuracy 0.6 or more) else 0.0."""
    return 1.0 if acc >= 0.5 else 0.0
