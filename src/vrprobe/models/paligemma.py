"""PaliGemma family (`model_type` "paligemma"): prompt `<image>answer en {question}`.

The processor itself puts the image tokens and `<bos>` before the text and `\\n` after it, and returns
`token_type_ids`: 0 for the prefix (image + question, which attends bidirectionally), 1 for the answer suffix, so
appended answer tokens get 1.
"""

from vrprobe.models.base import Adapter


class PaliGemmaAdapter(Adapter):
    family = "paligemma"
    model_types = ("paligemma",)
    answer_anchor = "\n"
    answer_sep = ""
    continuation_fill = {"attention_mask": 1, "token_type_ids": 1}

    def prompt(self, question: str) -> str:
        return f"<image>answer en {question}"
