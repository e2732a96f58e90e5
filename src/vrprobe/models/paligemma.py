"""PaliGemma family (`model_type` "paligemma"): prompt `<image>answer en {question}`.

The processor itself puts the image tokens and `<bos>` before the text and `\\n` after it, and returns
`token_type_ids`: 0 for the prefix (image + question, which attends bidirectionally), 1 for the answer suffix, so
appended answer tokens get 1.

Open-ended questions (VQA v2, OK-VQA) are asked in PaliGemma's own VQA format, `answer en {question}` and nothing else
(big_vision's VQAv2 / OK-VQA transfers); lmms-eval's "Answer the question using a single word or phrase." is an
instruction for chat models and stays out. Closed-set samples keep `Sample.text` (ScienceQA's lettered options and
its letter instruction: PaliGemma has no multiple-choice format of its own).
"""

from typing import Any

from vrprobe.models.generic import GenericAdapter


class PaliGemmaAdapter(GenericAdapter):
    family = "paligemma"
    model_types = ("paligemma",)
    answer_anchor = "\n"
    answer_sep = ""
    continuation_fill = {"attention_mask": 1, "token_type_ids": 1}

    def prompt(self, question: str) -> str:
        return f"<image>answer en {question}"

    def question_text(self, sample: Any) -> str:
        """The bare question for open-ended samples (no candidate set), `Sample.text` for closed-set ones."""
        return sample.question if sample.choices is None else sample.text
