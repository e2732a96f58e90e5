"""Qwen2-VL family (`model_type` "qwen2_vl"), and an image-only processor for machines without torchvision.

The stock `Qwen2VLProcessor` cannot be built without torchvision: its video-processor slot is checked even when given
None. `Qwen2VLImageOnlyProcessor` is the same processor with no video slot; it reads the same checkpoint files.
"""

from pathlib import Path
from typing import Any

from transformers import ProcessorMixin, Qwen2VLProcessor
from transformers.utils import is_torchvision_available

from vrprobe.errors import UsageError
from vrprobe.models.base import Adapter


class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
    """`Qwen2VLProcessor` for images only (no video processor, so no torchvision needed)."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kwargs: Any):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = None
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


class Qwen2VLAdapter(Adapter):
    family = "qwen2vl"
    model_types = ("qwen2_vl",)
    answer_anchor = "assistant\n"
    answer_sep = ""
    system = "You are a helpful assistant."

    @classmethod
    def load_processor(cls, path: Path) -> Any:
        if is_torchvision_available():
            return super().load_processor(path)
        return Qwen2VLImageOnlyProcessor.from_pretrained(str(path))

    def set_pixel_limits(self, min_pixels: int | None, max_pixels: int | None) -> None:
        """`--min-pixels` / `--max-pixels`: the image processor's resize bounds (its `size` shortest_edge /
        longest_edge, in pixels); unset, the checkpoint's own processor settings stay."""
        proc = self.processor.image_processor
        size = dict(proc.size)
        low = size.get("shortest_edge") if min_pixels is None else min_pixels
        high = size.get("longest_edge") if max_pixels is None else max_pixels
        if low is not None and high is not None and low > high:
            raise UsageError(f"--min-pixels {low} is above --max-pixels {high}")
        size.update({"shortest_edge": low, "longest_edge": high})
        proc.size = size
        self._empty_cache.clear()

    def prompt(self, question: str) -> str:
        return (
            f"<|im_start|>system\n{self.system}<|im_end|>\n"
            f"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{question}<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
