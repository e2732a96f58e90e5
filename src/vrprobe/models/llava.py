"""LLaVA-1.5 family (`model_type` "llava"): `USER: <image>\\n{question} ASSISTANT:`."""

from typing import Any

from vrprobe.models.generic import GenericAdapter


class LlavaAdapter(GenericAdapter):
    family = "llava"
    model_types = ("llava",)
    answer_anchor = "ASSISTANT:"
    answer_sep = " "

    def prompt(self, question: str) -> str:
        return f"USER: <image>\n{question} ASSISTANT:"

    def image_feature_kwargs(self) -> dict[str, Any]:
        cfg = self.model.config
        return {
            "vision_feature_layer": cfg.vision_feature_layer,
            "vision_feature_select_strategy": cfg.vision_feature_select_strategy,
        }
