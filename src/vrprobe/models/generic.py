"""`GenericAdapter`: any Hugging Face image-text-to-text model whose image tokens sit in the decoder's input sequence.

Everything is read from the checkpoint, nothing is written per family:
- **prompt**: the processor's chat template, one user turn holding one image and the question, generation prompt
  added (`apply_chat_template(..., add_generation_prompt=True)`); tokenized as transformers' own
  `apply_chat_template(tokenize=True)` does, without adding special tokens a second time;
- **answer anchor**: the template's generation prompt, i.e. the text `add_generation_prompt=True` appends (Qwen:
  `<|im_start|>assistant\\n`; Gemma 3: `<start_of_turn>model\\n`; Idefics3: `Assistant:`), or, for a template
  without one (LLaVA-NeXT's), the text it puts after the question (` [/INST]`); an answer follows it
  directly when it ends in whitespace or a special token, after one space otherwise (`USER: ... ASSISTANT: yes`);
- **image positions**: the config's image token id (`image_token_id` or `image_token_index`) in the `input_ids` the
  processor produced, after its own expansion (tiles, splits, newline features: every position the model fills from
  the vision tower); wrapper tokens the processor adds around them (`<|vision_start|>`, `<fake_token_around_image>`,
  `<row_1_col_1>`, `[IMG_BREAK]`, `<start_of_image>` ...) are ordinary text tokens, identical with and without a
  question, so they belong to neither the `image` nor the `question` group;
- **decoder**: `get_decoder().layers`.

A family gets a subclass only where it truly differs: the zoo's three families keep the fixed prompts they were
trained with, PaliGemma its prefix format, LLaVA its feature-layer arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vrprobe.errors import UsageError, VrprobeError
from vrprobe.models.base import Adapter
from vrprobe.models.processors import load_processor

#: an image processor that resizes to a pixel budget (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) has these attributes
NATIVE_RESOLUTION_ATTRS = ("merge_size", "temporal_patch_size")
#: a question no template rewrites, to find the text a template puts after the question
MARKER = "vrprobequestionmarker"


class GenericAdapter(Adapter):
    """An image-text-to-text model driven through its own chat template and config (see the module docstring)."""

    family = "generic"
    trust_remote_code = False

    def __init__(self, model: Any, processor: Any, *, name: str = "") -> None:
        super().__init__(model, processor, name=name)
        if type(self).family == "generic":
            self.family = str(model.config.model_type)
        self._anchor: tuple[str, str] | None = None

    @classmethod
    def load_processor(cls, path: Path, *, trust_remote_code: bool = False) -> Any:
        return load_processor(path, trust_remote_code=trust_remote_code)

    # ---- prompt from the chat template ------------------------------------------------------------------------
    def _chat(self, question: str, generation_prompt: bool) -> str:
        template_owner = self.processor if getattr(self.processor, "chat_template", None) else self.tokenizer
        if not getattr(template_owner, "chat_template", None):
            raise VrprobeError(
                f"{self.name}: the checkpoint has no chat template, and vrprobe asks a {self.family} model its "
                "question through it (save the processor with its chat_template)"
            )
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return template_owner.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)

    def prompt(self, question: str) -> str:
        """One user turn (an image, then the question) through the chat template, generation prompt added."""
        return self._chat(question, True)

    def _process(self, image: Any, text: str, **kwargs: Any) -> dict[str, Any]:
        if type(self).prompt is not GenericAdapter.prompt:  # a family's own prompt: tokenized as the family does
            return super()._process(image, text, **kwargs)
        # The template already holds the special tokens it wants (BOS included): add none a second time.
        return super()._process(image, text, add_special_tokens=False, **kwargs)

    def _generation_prompt(self) -> tuple[str, str]:
        if self._anchor is None:
            with_prompt, without = self._chat("", True), self._chat("", False)
            common = 0
            while common < min(len(with_prompt), len(without)) and with_prompt[common] == without[common]:
                common += 1
            anchor = with_prompt[common:]
            if not anchor:  # a template with no generation prompt (LLaVA-NeXT's): the text after the question
                marked = self._chat(MARKER, True)
                anchor = marked[marked.rindex(MARKER) + len(MARKER) :] if MARKER in marked else ""
            if not anchor:
                raise VrprobeError(f"{self.name}: its chat template puts nothing between a question and the answer")
            ids = self.tokenizer(anchor, add_special_tokens=False)["input_ids"]
            special = set(self.tokenizer.all_special_ids) | {
                i for i, t in getattr(self.tokenizer, "added_tokens_decoder", {}).items() if t.special
            }
            ends_open = anchor[-1:].isspace() or (bool(ids) and ids[-1] in special)
            self._anchor = (anchor, "" if ends_open else " ")
        return self._anchor

    @property
    def answer_anchor(self) -> str:  # type: ignore[override]
        """The chat template's generation prompt: the text just before an answer."""
        return self._generation_prompt()[0]

    @property
    def answer_sep(self) -> str:  # type: ignore[override]
        """'' when the generation prompt ends in whitespace or a special token, else one space."""
        return self._generation_prompt()[1]

    # ---- image resizing ---------------------------------------------------------------------------------------
    def set_pixel_limits(self, min_pixels: int | None, max_pixels: int | None) -> None:
        """`--min-pixels` / `--max-pixels`: a native-resolution image processor's resize bounds (its `size`
        shortest_edge / longest_edge, in pixels; Qwen2-VL, Qwen2.5-VL, Qwen3-VL); unset, the checkpoint's own
        settings stay. Other image processors resize to fixed sizes or tiles and refuse them."""
        if min_pixels is None and max_pixels is None:
            return
        proc = getattr(self.processor, "image_processor", None)
        if proc is None or not all(hasattr(proc, a) for a in NATIVE_RESOLUTION_ATTRS):
            raise UsageError(
                "--min-pixels / --max-pixels apply to Qwen2-VL-style native-resolution image processors only, "
                f"not to {self.family}"
            )
        size = dict(proc.size)
        low = size.get("shortest_edge") if min_pixels is None else min_pixels
        high = size.get("longest_edge") if max_pixels is None else max_pixels
        if low is not None and high is not None and low > high:
            raise UsageError(f"--min-pixels {low} is above --max-pixels {high}")
        size.update({"shortest_edge": low, "longest_edge": high})
        proc.size = size
        self._empty_cache.clear()
