"""Tiny random-weight checkpoints of Gemma 3, LLaVA-NeXT, Idefics3 and Mistral 3 (Pixtral), built offline.

`BUILDERS[model_type](out_dir)` writes a complete `save_pretrained` folder (config, safetensors weights, tokenizer,
image processor, processor config and the family's real chat template) and returns `out_dir`.

Shapes follow transformers' own `*ModelTester` configs, shrunk: text model hidden 64, 4 heads, 2 KV heads, MLP 128,
3 decoder layers; vision tower hidden 32, 2 layers. Weights are seeded (`torch.manual_seed(0)`), float32, with a wide
init (`initializer_range=0.3`) so that different inputs get clearly different scores. The image processors are the
PIL variants (no torchvision), set so a 64×64 image is cut the family's own way into a few image tokens:

- gemma3: one 64×64 crop, 8×8 SigLIP patches average-pooled to 16 `<image_soft_token>`s between
  `<start_of_image>` / `<end_of_image>`; layers [sliding, sliding, full] with a 16-token window.
- llava_next: anyres, a 2×2 grid of 32×32 tiles plus the 32×32 base image, 24 `<image>` features
  (4 base + 16 tile + 4 image-newline).
- idefics3: `do_image_splitting`: a 2×2 grid of 32×32 tiles plus the global image, 4 `<image>` tokens each
  (pixel shuffle 2), wrapped in `<fake_token_around_image>`, `<row_i_col_j>` and `<global-img>`.
- mistral3: 64×64 at merged patch 16 → 4 rows of 4 `[IMG]`, rows ended by `[IMG_BREAK]` and the last by `[IMG_END]`.

SmolVLM is not built: `SmolVLMProcessor` needs a `SmolVLMVideoProcessor` (torchvision only) and the `num2words`
package, neither of which is installed.

Loading the mistral3 folder needs `load_processor` below: transformers' `PixtralProcessor` module imports the
torchvision image processor at module level, so `AutoProcessor` cannot build it without torchvision.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
from transformers import (
    CLIPVisionConfig,
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    Gemma3TextConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    Idefics3VisionConfig,
    LlamaConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    Mistral3Config,
    Mistral3ForConditionalGeneration,
    MistralConfig,
    PixtralImageProcessorPil,
    PixtralVisionConfig,
    PreTrainedTokenizerFast,
    SiglipVisionConfig,
)
from transformers.utils import is_torchvision_available

IMAGE_SIZE = 64
INIT = 0.3
SEED = 0
TEXT = dict(
    hidden_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    num_hidden_layers=3,
    max_position_embeddings=512,
    initializer_range=INIT,
)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, initializer_range=INIT)

# --- the families' real chat templates -------------------------------------------------------------------------

# google/gemma-3-4b-it
GEMMA3_TEMPLATE = (
    "{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n    {%- endif -%}\n"
    '    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n    {%- set first_user_prefix = "" -%}\n'
    "    {%- set loop_messages = messages -%}\n{%- endif -%}\n{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    '        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}\n'
    "    {%- endif -%}\n    {%- if (message['role'] == 'assistant') -%}\n        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n        {%- set role = message['role'] -%}\n    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n        {%- endfor -%}\n    {%- else -%}\n"
    '        {{ raise_exception("Invalid content type") }}\n    {%- endif -%}\n'
    "    {{ '<end_of_turn>\n' }}\n{%- endfor -%}\n{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n{%- endif -%}\n"
)

# llava-hf/llava-v1.6-mistral-7b-hf (chat_template.json)
LLAVA_NEXT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\n' + message['content'][0]['text'] + '\n<</SYS>>\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{{' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'][0]['text'] + '</s> '}}{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

# HuggingFaceM4/Idefics3-8B-Llama3
IDEFICS3_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# mistralai/Mistral-Small-3.1-24B-Instruct-2503
MISTRAL3_TEMPLATE = (
    '{%- set today = strftime_now("%Y-%m-%d") %}\n'
    '{%- set default_system_message = "You are Mistral Small 3, a Large Language Model (LLM) created by Mistral AI, '
    "a French startup headquartered in Paris.\\nYour knowledge base was last updated on 2023-10-01. "
    'The current date is " + today + ".\\n\\nWhen you\'re not sure about some information, you say that you '
    "don't have the information and don't make up anything.\\nIf the user's question is not clear, ambiguous, or "
    "does not provide enough context for you to accurately answer the question, you do not try to answer it right "
    'away and you rather ask the user to clarify their request (e.g. \\"What are some good restaurants around me?\\" '
    '=> \\"Where are you?\\" or \\"When is the next flight to Tokyo\\" => \\"Where do you travel from?\\")" %}\n\n'
    "{{- bos_token }}\n\n{%- if messages[0]['role'] == 'system' %}\n    {%- if messages[0] is string %}\n"
    "        {%- set system_message = messages[0]['content'] %}\n        {%- set loop_messages = messages[1:] %}\n"
    "    {%- else %} \n        {%- set system_message = messages[0]['content'][0]['text'] %}\n"
    "        {%- set loop_messages = messages[1:] %}\n    {%- endif %}\n{%- else %}\n"
    "    {%- set system_message = default_system_message %}\n    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n{{- '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' }}\n\n"
    "{%- for message in loop_messages %}\n    {%- if message['role'] == 'user' %}\n"
    "            {%- if message['content'] is string %}\n"
    "            {{- '[INST]' + message['content'] + '[/INST]' }}\n            {%- else %}\n"
    "                    {{- '[INST]' }}\n                    {%- for block in message['content'] %}\n"
    "                            {%- if block['type'] == 'text' %}\n"
    "                                    {{- block['text'] }}\n"
    "                            {%- elif block['type'] == 'image' or block['type'] == 'image_url' %}\n"
    "                                    {{- '[IMG]' }}\n                                {%- else %}\n"
    "                                    {{- raise_exception('Only text and image blocks are supported in "
    "message content!') }}\n                                {%- endif %}\n"
    "                        {%- endfor %}\n                    {{- '[/INST]' }}\n                {%- endif %}\n"
    "    {%- elif message['role'] == 'system' %}\n"
    "        {{- '[SYSTEM_PROMPT]' + message['content'] + '[/SYSTEM_PROMPT]' }}\n"
    "    {%- elif message['role'] == 'assistant' %}\n        {%- if message['content'] is string %}\n"
    "            {{- message['content'] + eos_token }}\n        {%- else %}\n"
    "            {{- message['content'][0]['text'] + eos_token }}\n        {%- endif %}\n    {%- else %}\n"
    "        {{- raise_exception('Only user, system and assistant roles are supported!') }}\n    {%- endif %}\n"
    "{%- endfor %}"
)

# --- tokenizers ------------------------------------------------------------------------------------------------


def _corpus() -> list[str]:
    from vrprobe.zoo.build import corpus

    return corpus()


def build_tokenizer(
    chat_template: str,
    named: dict[str, str],
    extra: dict[str, str] | None = None,
    specials: list[str] = (),
    more_words: list[str] = (),
) -> PreTrainedTokenizerFast:
    """A lower-casing WordLevel tokenizer (as `vrprobe.zoo.build.build_tokenizer`), adding no BOS/EOS.

    Vocabulary: the zoo corpus words; every word of the chat template, both its source and its renderings of a few
    conversations (system, user, assistant turns, images); `more_words`; "\\n" (a token of its own, as in the real
    tokenizers, so that row breaks and "\\n\\n" count the way the processors expect); and the special tokens:
    `named` (bos/eos/pad/unk), `extra` (named model-specific tokens such as `image_token`, saved in the tokenizer
    config so that the processors find them as tokenizer attributes) and `specials` (the other special tokens).
    """
    extra = extra or {}
    all_specials = list(dict.fromkeys([*named.values(), *extra.values(), *specials]))
    texts = [*_corpus(), chat_template, *more_words]
    tok = _word_level(texts, named, extra, all_specials, chat_template)
    texts += _renderings(tok)
    return _word_level(texts, named, extra, all_specials, chat_template)


def _word_level(
    texts: list[str], named: dict[str, str], extra: dict[str, str], all_specials: list[str], chat_template: str
) -> PreTrainedTokenizerFast:
    normalizer = normalizers.Lowercase()
    pre = pre_tokenizers.Whitespace()
    words: set[str] = set()
    for text in texts:
        for tok in all_specials:
            text = text.replace(tok, " ")
        words.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    vocab = {t: i for i, t in enumerate([*all_specials, "\n", *sorted(words - set(all_specials))])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=named["unk_token"]))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre
    backend.add_tokens([AddedToken("\n", normalized=False, special=False)])
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in all_specials])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, extra_special_tokens=dict(extra) or None, **named)
    unnamed = [t for t in all_specials if t not in named.values() and t not in extra.values()]
    if unnamed:
        tok.add_special_tokens({"extra_special_tokens": unnamed}, replace_extra_special_tokens=False)
    tok.padding_side = "left"
    tok.chat_template = chat_template
    return tok


def _renderings(tok: PreTrainedTokenizerFast) -> list[str]:
    """The chat template rendered on a few conversations (templates spell some words only when rendered)."""
    say = [{"type": "text", "text": "yes"}]
    conversations = [
        [{"role": "user", "content": [{"type": "image"}, *say]}],
        [{"role": "user", "content": say}, {"role": "assistant", "content": say}, {"role": "user", "content": say}],
        [{"role": "system", "content": say}, {"role": "user", "content": [{"type": "image"}, *say]}],
    ]
    out = []
    for conversation in conversations:
        with contextlib.suppress(Exception):  # a template may refuse a role; the other renderings still count
            out.append(tok.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False))
    return out


def _widen_vision(tower: torch.nn.Module) -> None:
    """Redraw the vision tower's Linear/Conv weights from N(0, INIT): SigLIP's and CLIP's own inits ignore
    `initializer_range` (they scale by width and depth), which leaves a tiny random tower nearly flat."""
    with torch.no_grad():
        for module in tower.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                module.weight.normal_(0.0, INIT)


def _ids(tok: Any) -> dict[str, int]:
    return dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)


def _save(model: Any, processor: Any, out: Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    return out


# --- gemma3 ----------------------------------------------------------------------------------------------------


def build_gemma3(out: Path) -> Path:
    extra = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}
    tok = build_tokenizer(
        GEMMA3_TEMPLATE,
        named=dict(pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"),
        extra=extra,
        specials=["<start_of_turn>", "<end_of_turn>"],
    )
    patch, tokens_per_image = 8, 16  # 8×8 patches, 2×2 average pool → 4×4 = 16 soft tokens
    ip = Gemma3ImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_pan_and_scan=False)
    processor = Gemma3Processor(
        image_processor=ip, tokenizer=tok, chat_template=GEMMA3_TEMPLATE, image_seq_length=tokens_per_image
    )
    head_dim = TEXT["hidden_size"] // TEXT["num_attention_heads"]
    tc = Gemma3TextConfig(
        vocab_size=len(tok),
        head_dim=head_dim,
        query_pre_attn_scalar=head_dim,
        sliding_window=16,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        **TEXT,
        **_ids(tok),
    )
    vc = SiglipVisionConfig(image_size=IMAGE_SIZE, patch_size=patch, **VISION)
    cfg = Gemma3Config(
        text_config=tc,
        vision_config=vc,
        mm_tokens_per_image=tokens_per_image,
        boi_token_index=tok.convert_tokens_to_ids(extra["boi_token"]),
        eoi_token_index=tok.convert_tokens_to_ids(extra["eoi_token"]),
        image_token_index=tok.convert_tokens_to_ids(extra["image_token"]),
        initializer_range=INIT,
        **_ids(tok),
    )
    torch.manual_seed(SEED)
    model = Gemma3ForConditionalGeneration(cfg).eval()
    # Gemma3 initialises its image projection to zeros, which would leave a random model blind to the image.
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, INIT)
    _widen_vision(model.model.vision_tower)
    return _save(model, processor, out)


# --- llava_next ------------------------------------------------------------------------------------------------


def build_llava_next(out: Path) -> Path:
    tok = build_tokenizer(
        LLAVA_NEXT_TEMPLATE,
        named=dict(pad_token="<pad>", eos_token="</s>", bos_token="<s>", unk_token="<unk>"),
        extra={"image_token": "<image>"},
    )
    tile, patch = 32, 16  # 2×2 patches per tile; a 64×64 image picks the 64×64 pinpoint → 2×2 tiles + base image
    pinpoints = [[32, 64], [64, 32], [64, 64]]
    ip = LlavaNextImageProcessorPil(
        size={"shortest_edge": tile},
        crop_size={"height": tile, "width": tile},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=ip,
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_NEXT_TEMPLATE,
    )
    vc = CLIPVisionConfig(image_size=tile, patch_size=patch, projection_dim=32, initializer_factor=1.0, **VISION)
    tc = MistralConfig(vocab_size=len(tok), sliding_window=None, **TEXT, **_ids(tok))
    cfg = LlavaNextConfig(
        vision_config=vc,
        text_config=tc,
        image_token_index=processor.image_token_id,
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=(tile // patch) ** 2,
        initializer_range=INIT,
        **_ids(tok),
    )
    torch.manual_seed(SEED)
    model = LlavaNextForConditionalGeneration(cfg).eval()
    _widen_vision(model.model.vision_tower)
    return _save(model, processor, out)


# --- idefics3 --------------------------------------------------------------------------------------------------


def build_idefics3(out: Path) -> Path:
    row_col = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tok = build_tokenizer(
        IDEFICS3_TEMPLATE,
        named=dict(
            pad_token="<|reserved_special_token_0|>",
            eos_token="<end_of_utterance>",
            bos_token="<|begin_of_text|>",
            unk_token="<unk>",
        ),
        specials=["<|end_of_text|>", "<fake_token_around_image>", "<image>", "<global-img>", *row_col],
    )
    tile, patch, scale = 32, 8, 2  # 4×4 patches per tile, pixel shuffle 2 → 4 tokens per tile
    image_seq_len = (tile // patch) ** 2 // scale**2
    ip = Idefics3ImageProcessorPil(
        size={"longest_edge": IMAGE_SIZE},
        max_image_size={"longest_edge": tile},
        do_image_splitting=True,
    )
    processor = Idefics3Processor(
        image_processor=ip, tokenizer=tok, image_seq_len=image_seq_len, chat_template=IDEFICS3_TEMPLATE
    )
    vc = Idefics3VisionConfig(image_size=tile, patch_size=patch, **VISION)
    tc = LlamaConfig(vocab_size=len(tok), **TEXT, **_ids(tok))
    cfg = Idefics3Config(
        vision_config=vc,
        text_config=tc,
        image_token_id=processor.image_token_id,
        scale_factor=scale,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(SEED)
    model = Idefics3ForConditionalGeneration(cfg).eval()
    return _save(model, processor, out)


# --- mistral3 (Pixtral processor) ------------------------------------------------------------------------------


def pixtral_processor_class() -> type:
    """transformers' real `PixtralProcessor`, importable without torchvision.

    `processing_pixtral` imports `get_resize_output_image_size` from the torchvision image-processor module at
    import time (and the lazy `transformers.PixtralProcessor` is a placeholder when torchvision is missing). The
    PIL module defines the same function, so it stands in for that one import; the stand-in is removed afterwards.
    """
    if is_torchvision_available():
        from transformers import PixtralProcessor

        return PixtralProcessor
    name = "transformers.models.pixtral.processing_pixtral"
    if name in sys.modules and hasattr(sys.modules[name], "PixtralProcessor"):
        return sys.modules[name].PixtralProcessor
    tv_name = "transformers.models.pixtral.image_processing_pixtral"
    pil = importlib.import_module("transformers.models.pixtral.image_processing_pil_pixtral")
    stub = types.ModuleType(tv_name)
    stub.get_resize_output_image_size = pil.get_resize_output_image_size
    saved = sys.modules.get(tv_name)
    sys.modules[tv_name] = stub
    try:
        sys.modules.pop(name, None)
        module = importlib.import_module(name)
    finally:
        if saved is None:
            sys.modules.pop(tv_name, None)
        else:
            sys.modules[tv_name] = saved
    return module.PixtralProcessor


def build_mistral3(out: Path) -> Path:
    dates = [f"{n:02d}" for n in range(100)] + [str(y) for y in range(2000, 2100)]
    tok = build_tokenizer(
        MISTRAL3_TEMPLATE,
        named=dict(pad_token="<pad>", eos_token="</s>", bos_token="<s>", unk_token="<unk>"),
        specials=["[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[IMG]", "[IMG_BREAK]", "[IMG_END]"],
        more_words=dates,
    )
    patch, merge = 8, 2  # 8×8 patches of a 64×64 image, merged 2×2 → 4×4 [IMG] + 3 [IMG_BREAK] + [IMG_END]
    ip = PixtralImageProcessorPil(
        size={"longest_edge": IMAGE_SIZE}, patch_size={"height": patch, "width": patch}
    )  # the processor multiplies the patch by spatial_merge_size when it calls the image processor, as in the hub's
    processor = pixtral_processor_class()(
        image_processor=ip,
        tokenizer=tok,
        patch_size=patch,
        spatial_merge_size=merge,
        chat_template=MISTRAL3_TEMPLATE,
    )
    vc = PixtralVisionConfig(image_size=IMAGE_SIZE, patch_size=patch, head_dim=16, **VISION)
    tc = MistralConfig(vocab_size=len(tok), sliding_window=None, **TEXT, **_ids(tok))
    cfg = Mistral3Config(
        vision_config=vc,
        text_config=tc,
        image_token_index=processor.image_token_id,
        spatial_merge_size=merge,
        vision_feature_layer=-1,
        multimodal_projector_bias=False,
        tie_word_embeddings=False,
        **_ids(tok),
    )
    torch.manual_seed(SEED)
    model = Mistral3ForConditionalGeneration(cfg).eval()
    return _save(model, processor, out)


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "gemma3": build_gemma3,
    "llava_next": build_llava_next,
    "idefics3": build_idefics3,
    "mistral3": build_mistral3,
}


def load_processor(path: Path) -> Any:
    """`AutoProcessor.from_pretrained`, except a Pixtral (mistral3) folder without torchvision: see
    `pixtral_processor_class`."""
    from transformers import AutoProcessor

    cfg = json.loads((Path(path) / "processor_config.json").read_text())
    if cfg.get("processor_class") == "PixtralProcessor" and not is_torchvision_available():
        return pixtral_processor_class().from_pretrained(str(path))
    return AutoProcessor.from_pretrained(str(path))
