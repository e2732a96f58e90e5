"""`Adapter`: one interface over the VLM families (load, prompt, encode, token groups, answer scoring).

`vrprobe.models.generic.GenericAdapter` fills in the prompt from the checkpoint's chat template; a family subclass
only states what differs: its prompt, the text that precedes an answer, the fill values of its extra per-token
inputs. Everything else, including where the image tokens sit, is read from the model's own config
(`image_token_id` / `image_token_index`) and `input_ids`, never from fixed offsets; decoder layers come from
`get_decoder()`.

Names: `Encoded` (one sample's model inputs, unpadded, with its question span), `Batch` (left-padded inputs of several
samples + `TokenGroups`), `TokenGroups` (boolean masks [B, T] for `image`, `question`, `last`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image

from vrprobe.errors import UsageError, VrprobeError
from vrprobe.models import geometry
from vrprobe.models.batch import (  # noqa: F401  (re-exported: the names every module imports from here)
    DROP_KEYS,
    GROUPS,
    TEXT_KEYS,
    Batch,
    Encoded,
    Generated,
    TokenGroups,
    pad_trailing,
)


class Adapter:
    """A loaded model + processor of one family, behind the interface every vrprobe module uses."""

    #: the family's name; `GenericAdapter` sets each instance's from the config's `model_type`
    family: str = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    #: text that immediately precedes the answer in the prompt, and the separator before the answer
    answer_anchor: ClassVar[str] = ""
    answer_sep: ClassVar[str] = ""
    #: value given to each per-token input for appended (answer) tokens; keys not named get 0
    continuation_fill: ClassVar[dict[str, int]] = {"attention_mask": 1}

    def __init__(self, model: Any, processor: Any, *, name: str = "") -> None:
        self.model = model
        self.processor = processor
        self.name = name or getattr(model.config, "_name_or_path", "") or self.family
        self._empty_cache: dict[int, list[int]] = {}
        self._answer_cache: dict[str, list[int]] = {}

    # ---- loading -------------------------------------------------------------------------------------------
    @classmethod
    def load_processor(cls, path: Path, *, trust_remote_code: bool = False) -> Any:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(str(path), trust_remote_code=trust_remote_code)

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        attn_implementation: str = "vrprobe",
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
        device_map: str | None = None,
        name: str = "",
        trust_remote_code: bool = False,
    ) -> Adapter:
        """Load a local model directory through the Auto classes, as any Hugging Face checkpoint is loaded, in `dtype`
        (default float32) on `device` (default CPU), or placed by accelerate with `device_map="auto"`.

        `attn_implementation` applies to the language model: a name registered with transformers' `AttentionInterface`
        ("vrprobe", registered by `vrprobe.registry.load_adapter`: attention that interventions can edit and record)
        or "eager". The vision tower always uses eager. `trust_remote_code` runs code shipped with the checkpoint
        (model and processor); off unless the user passes `--trust-remote-code`.
        """
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(
            str(path),
            attn_implementation={"text_config": attn_implementation, "vision_config": "eager"},
            dtype=dtype or torch.float32,
            trust_remote_code=trust_remote_code,
            **({"device_map": device_map} if device_map else {}),
        )
        if not device_map:
            # transformers wraps `to` in `functools.wraps(nn.Module.to)`, whose stub type leaves `self` unbound
            model.to(device or torch.device("cpu"))  # type: ignore[arg-type]
        model.eval()
        processor = cls.load_processor(path, trust_remote_code=trust_remote_code)
        return cls(model, processor, name=name or str(path))

    def set_pixel_limits(self, min_pixels: int | None, max_pixels: int | None) -> None:
        """Bound the number of pixels an image is resized to (families with native-resolution image processing)."""
        if min_pixels is not None or max_pixels is not None:
            raise UsageError(
                "--min-pixels / --max-pixels apply to Qwen2-VL-style native-resolution image processors only, "
                f"not to {self.family}"
            )

    # ---- facts read from the model -------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def image_token_id(self) -> int:
        """The id of the token the processor repeats once per image-feature position: the config's
        `image_token_id`, or `image_token_index` in configs that name it so (LLaVA-NeXT, Mistral 3)."""
        cfg = self.model.config
        value = getattr(cfg, "image_token_id", None)
        if value is None:
            value = getattr(cfg, "image_token_index", None)
        if value is None:
            raise VrprobeError(f"{self.name}: its config names no image token (image_token_id / image_token_index)")
        return int(value)

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        return int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)

    @property
    def eos_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @cached_property
    def decoder_layers(self) -> Any:
        """The language model's decoder layers (a ModuleList), found through `get_decoder()`."""
        return self.model.get_decoder().layers

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits from the last decoder layer's output: the decoder's final norm, the LM head, and the
        family's final logit soft-capping when its config sets one."""
        norm = getattr(self.model.get_decoder(), "norm", None)
        if norm is None:
            raise ValueError(f"{type(self.model.get_decoder()).__name__} has no final norm")
        logits = self.model.get_output_embeddings()(norm(hidden))
        cap = getattr(self.model.config.get_text_config(), "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    @property
    def records_attention(self) -> bool:
        """Whether the language model runs vrprobe's attention function (attention can be recorded and edited)."""
        return self.model.config.get_text_config()._attn_implementation == "vrprobe"

    @property
    def num_layers(self) -> int:
        return len(self.decoder_layers)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device of the input embeddings (the first device under a multi-device placement)."""
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The model's floating-point dtype; float inputs (pixel values) are cast to it."""
        return self.model.get_input_embeddings().weight.dtype

    # ---- prompts and encoding ------------------------------------------------------------------------------
    def prompt(self, question: str) -> str:
        """The family's prompt for a question (the processor expands the image placeholder)."""
        raise NotImplementedError

    def _process(self, image: Image.Image, text: str, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The processor's outputs for one image and prompt (`kwargs` go to the processor), labels dropped."""
        out = self.processor(text=[text], images=[image], return_tensors="pt", **kwargs)
        return {k: v for k, v in out.items() if k not in DROP_KEYS}

    def encode_one(self, image: Image.Image, question: str) -> Encoded:
        """Process one sample; the question span is where its ids differ from the same prompt with no question."""
        inputs = self._process(image, self.prompt(question))
        ids = inputs["input_ids"][0].tolist()
        n_img = sum(1 for t in ids if t == self.image_token_id)
        if n_img == 0:
            raise ValueError(f"{self.family}: the processor produced no image tokens (id {self.image_token_id})")
        if n_img not in self._empty_cache:
            self._empty_cache[n_img] = self._process(image, self.prompt(""))["input_ids"][0].tolist()
        empty = self._empty_cache[n_img]
        start = 0
        while start < min(len(ids), len(empty)) and ids[start] == empty[start]:
            start += 1
        tail = 0
        while tail < min(len(ids), len(empty)) - start and ids[-1 - tail] == empty[-1 - tail]:
            tail += 1
        end = len(ids) - tail
        return Encoded(inputs=inputs, question_span=(start, end), image_size=image.size)

    def extend(self, item: Encoded, ids: Sequence[int]) -> Encoded:
        """Append tokens (an answer continuation) to one encoded sample, filling its per-token inputs."""
        n = len(ids)
        inputs = dict(item.inputs)
        for key in TEXT_KEYS:
            if key not in inputs:
                continue
            if key == "input_ids":
                tail = torch.tensor([list(ids)], dtype=inputs[key].dtype)
            else:
                tail = torch.full((1, n), self.continuation_fill.get(key, 0), dtype=inputs[key].dtype)
            inputs[key] = torch.cat([inputs[key], tail], dim=1)
        return Encoded(inputs=inputs, question_span=item.question_span, image_size=item.image_size)

    def collate(self, items: Sequence[Encoded]) -> Batch:
        """Left-pad per-token inputs to a common length and concatenate per-image inputs."""
        width = max(it.length for it in items)
        inputs: dict[str, torch.Tensor] = {}
        for key in items[0].inputs:
            parts = [it.inputs[key] for it in items]
            if key in TEXT_KEYS:
                fill = self.pad_token_id if key == "input_ids" else 0
                parts = [torch.cat([torch.full((1, width - p.shape[1]), fill, dtype=p.dtype), p], 1) for p in parts]
            else:
                parts = pad_trailing(parts)
            inputs[key] = torch.cat(parts, 0)
        image = inputs["input_ids"] == self.image_token_id
        question = torch.zeros_like(image)
        for row, it in enumerate(items):
            offset = width - it.length
            question[row, offset + it.question_span[0] : offset + it.question_span[1]] = True
        last = torch.zeros_like(image)
        last[:, -1] = True
        dev, dtype = self.device, self.dtype
        inputs = {k: v.to(dev, dtype) if v.is_floating_point() else v.to(dev) for k, v in inputs.items()}
        pad = torch.tensor([width - it.length for it in items])
        valid = torch.arange(width)[None, :] >= pad[:, None]
        groups = TokenGroups(image=image, question=question, last=last, valid=valid, pad=pad)
        return Batch(inputs=inputs, groups=groups, items=list(items))

    def question_text(self, sample: Any) -> str:
        """What a dataset sample puts into the family's prompt: by default `sample.text` (the question, then the
        benchmark's instruction on its own line, as lmms-eval asks chat models). A family with its own task format
        overrides this."""
        return sample.text

    def encode_samples(self, samples: Sequence[Any]) -> Batch:
        """Encode dataset samples: each one's image and its `question_text`."""
        return self.encode([s.load_image() for s in samples], [self.question_text(s) for s in samples])

    def encode(self, images: Sequence[Image.Image], questions: Sequence[str]) -> Batch:
        return self.collate([self.encode_one(im, q) for im, q in zip(images, questions, strict=True)])

    # ---- image regions -------------------------------------------------------------------------------------
    def image_geometry(self, item: Encoded) -> geometry.ImageGeometry:
        """The original-image rectangle each image token of `item` covers, in `input_ids` order, and the token grid
        when there is one (`vrprobe.models.geometry`: the rule per model type). Raises `VrprobeError` for a model
        type whose processor geometry vrprobe does not follow, or an item encoded without its image size."""
        if item.image_size is None:
            raise VrprobeError(f"{self.name}: the encoded sample has no image size, so no image regions")
        return geometry.image_geometry(self.processor, self.model.config, item.inputs, item.image_size)

    # ---- running and scoring -------------------------------------------------------------------------------
    def image_feature_kwargs(self) -> dict[str, Any]:
        """Extra arguments the family's `get_image_features` needs (LLaVA: its feature layer and strategy)."""
        return {}

    def image_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Projected image features [B, n_image_tokens, D]: what the decoder receives at the image positions."""
        image_inputs = {k: v for k, v in inputs.items() if k not in TEXT_KEYS}
        feats = self.model.get_image_features(**image_inputs, **self.image_feature_kwargs()).pooler_output
        return torch.stack(list(feats)) if isinstance(feats, (list, tuple)) else feats

    def forward(self, batch: Batch, **kwargs: Any) -> Any:
        return self.model(**batch.inputs, **kwargs)

    def answer_ids(self, answer: str) -> list[int]:
        """Token ids of `answer` as it follows the prompt: ids(anchor + sep + answer) minus ids(anchor)."""
        if answer not in self._answer_cache:
            tok = self.tokenizer
            base = tok(self.answer_anchor, add_special_tokens=False)["input_ids"]
            full = tok(self.answer_anchor + self.answer_sep + answer, add_special_tokens=False)["input_ids"]
            if full[: len(base)] != base or len(full) == len(base):
                full = base + tok(answer, add_special_tokens=False)["input_ids"]
            self._answer_cache[answer] = list(full[len(base) :])
        return self._answer_cache[answer]

    @torch.no_grad()
    def generate(self, batch: Batch, max_new_tokens: int = 10) -> list[Generated]:
        """Greedy generation after the prompt, stopping at the end-of-sequence token; log-probabilities come from the
        raw next-token logits (before any logits processor)."""
        out = self.model.generate(
            **batch.inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            return_dict_in_generate=True,
            output_logits=True,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_id,
        )
        width = batch.inputs["input_ids"].shape[1]
        logp = torch.stack(out.logits, 1).float().log_softmax(-1)  # [B, steps, V]
        results = []
        for row, seq in enumerate(out.sequences[:, width:].tolist()):
            ids, lps, stop = [], [], None
            for step, tok in enumerate(seq):
                if tok == self.eos_token_id:
                    stop = float(logp[row, step, tok])
                    break
                ids.append(tok)
                lps.append(float(logp[row, step, tok]))
            text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            results.append(Generated(text=text, ids=ids, logprobs=lps, stop_logprob=stop))
        return results

    @torch.no_grad()
    def score_candidates(
        self,
        batch: Batch,
        candidates: Sequence[Sequence[str]],
        *,
        last_logits: torch.Tensor | None = None,
        context: Callable[[TokenGroups], AbstractContextManager[Any]] | None = None,
    ) -> list[torch.Tensor]:
        """Log-likelihood (nats) of each candidate answer's full token sequence given the prompt.

        Returns, per sample, a float tensor [C]: sum over the candidate's tokens of log p(token | prompt, previous
        answer tokens). Every candidate's first token is read off the prompt's last-position logits (`last_logits`
        [B, V] when the caller already ran the prompt); the candidates of more than one token are then run, without
        their last token, as one batch per sample, for the logits of their later tokens. `context(groups)`, when
        given, wraps every forward run here (e.g. an `intervene` block built for that forward's token groups).
        """
        wrap = context or (lambda groups: nullcontext())
        cand_ids = [[self.answer_ids(c) for c in row] for row in candidates]
        if last_logits is None:
            with wrap(batch.groups):
                last_logits = self.forward(batch, use_cache=False, logits_to_keep=1).logits[:, -1]
        logp = last_logits.float().log_softmax(-1)
        out = []
        for i, (item, row) in enumerate(zip(batch.items, cand_ids, strict=True)):
            scores = logp[i, [ids[0] for ids in row]]
            multi = [c for c, ids in enumerate(row) if len(ids) > 1]
            if multi:
                sub = self.collate([self.extend(item, row[c][:-1]) for c in multi])
                keep = max(len(row[c]) for c in multi) - 1  # the positions that predict second and later tokens
                with wrap(sub.groups):
                    later = self.forward(sub, use_cache=False, logits_to_keep=keep).logits.float().log_softmax(-1)
                extra = torch.zeros_like(scores)
                for j, c in enumerate(multi):
                    ids = row[c]
                    pos = torch.arange(keep - len(ids) + 1, keep)
                    extra[c] = later[j, pos, torch.tensor(ids[1:])].sum()
                scores = scores + extra
            out.append(scores)
        return out
