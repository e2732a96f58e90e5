"""Qwen2-VL family (`model_type` "qwen2_vl"), and the image-only processor the zoo builds its checkpoint with.

The stock `Qwen2VLProcessor` cannot be built without torchvision: its video-processor slot is checked even when given
None. `Qwen2VLImageOnlyProcessor` is the same processor with no video slot (loading any checkpoint without torchvision
goes through `vrprobe.models.processors`, which does this for every processor with a video slot).
"""

from typing import Any

from transformers import ProcessorMixin, Qwen2VLProcessor

from vrprobe.models.generic import GenericAdapter


class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
    """`Qwen2VLProcessor` for images only (no video processor, so no torchvision needed)."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kwargs: Any):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = None
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


class Qwen2VLAdapter(GenericAdapter):
    """What differs from the generic adapter: the fixed prompt (Qwen2-VL-Instruct's chat format with its default
    system turn), which the zoo model was trained with and which base checkpoints without a chat template need."""

    family = "qwen2vl"
    model_types = ("qwen2_vl",)
    answer_anchor = "assistant\n"
    answer_sep = ""
    system = "You are a helpful assistant."

    def prompt(self, question: str) -> str:
        return (
            f"<|im_start|>system\n{self.system}<|im_end|>\n"
            f"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{question}<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
