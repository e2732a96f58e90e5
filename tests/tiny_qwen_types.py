"""Tiny random-weight checkpoints, on disk, of four more VLM families: Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision, InternVL.

`BUILDERS[model_type](out_dir)` writes a complete `save_pretrained` folder (config, safetensors weights, tokenizer,
processor config, chat template) that `AutoModelForImageTextToText.from_pretrained` and
`vrprobe.models.processors.load_processor` read back. The configs follow transformers' own `*ModelTester`s, scaled
to one text shape (hidden 64, 4 heads, 2 KV heads, MLP 128, 4 decoder layers) and a vision tower of hidden 32, 2
layers. Weights are seeded and drawn wide (`initializer_range` 0.3) so that a random model scores different inputs
clearly differently. Each family's image processor is set so a 64×64 image makes a few image tokens while its own
splitting still happens:

- qwen2_5_vl: patch 8, merge 2 → 8×8 patches, 16 tokens; window attention over 2×2 merged windows in vision layer 0.
- qwen3_vl: patch 8, merge 2 → 16 tokens; deepstack taps vision layers 0 and 1 and adds them to the image-token
  hidden states after decoder layers 0 and 1.
- llava_onevision: 16-px tiles (4 features each); the grid pinpoints make 64×64 land on a 2×3-tile canvas, so anyres
  tiling, the unpadding of the padded tile column and the image-newline all happen: 4 + 4×4 + 4 = 24 tokens.
- internvl: 16-px tiles (4 tokens each after pixel shuffle); crop_to_patches to a 2×2 grid plus the thumbnail:
  5 × 4 = 20 `<IMG_CONTEXT>` tokens between `<img>` and `</img>`.

Tokenizers are offline word-level ones (as `vrprobe.zoo.build.build_tokenizer`) over the zoo corpus plus every word
of the family's chat template, with the family's real special tokens; chat templates are the real checkpoints' ones.
"""

# ruff: noqa: E501  (the Qwen3-VL chat template is kept verbatim, long lines included)
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import (
    GenerationConfig,
    GotOcr2ImageProcessorPil,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    LlavaOnevisionProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessorPil,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
)

from vrprobe.models.processors import image_only
from vrprobe.zoo.build import corpus

SEED = 0
INIT = 0.3  # initializer_range of text and vision configs (transformers' default is 0.02)
TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    initializer_range=INIT,
)
VISION = dict(hidden_size=32, intermediate_size=64, initializer_range=INIT)
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
HALF = [0.5, 0.5, 0.5]

# ---- chat templates of the real checkpoints ------------------------------------------------------------------------
# Qwen/Qwen2.5-VL-*-Instruct chat_template.json (the same as Qwen2-VL-Instruct's)
QWEN2_5_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: "
    "{% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen/Qwen3-VL-*-Instruct chat_template.json
QWEN3_VL_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' }}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- for message in messages %}
    {%- if message.role == "user" %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content_item in message.content %}
                {%- if 'text' in content_item %}
                    {{- content_item.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and message.content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

# llava-hf/llava-onevision-qwen2-*-ov-hf (transformers' convert_llava_onevision_weights_to_hf.py)
ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}"
    "{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif %}{{'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# OpenGVLab/InternVL3-*-hf (transformers' convert_internvl_weights_to_hf.py)
INTERNVL_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "{{ '<IMG_CONTEXT>\n' }}{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}{{'<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)

# ---- tokenizers -----------------------------------------------------------------------------------------------------
CHATML = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # Qwen2 tokenizer: pad <|endoftext|>, eos <|im_end|>
QWEN_VISION = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "vision_start_token": "<|vision_start|>",
    "vision_end_token": "<|vision_end|>",
}
ONEVISION_VISION = {"image_token": "<image>", "video_token": "<video>"}
INTERNVL_VISION = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}


def build_tokenizer(named: dict[str, str], template: str) -> PreTrainedTokenizerFast:
    """A lower-casing WordLevel tokenizer over the zoo corpus and the template's words; ChatML specials plus the
    family's vision tokens, also set as named tokenizer attributes (`tokenizer.image_token` ...) for the processor."""
    specials = ["<unk>", *CHATML, *named.values()]
    normalizer = normalizers.Lowercase()
    pre = pre_tokenizers.Whitespace()
    words: set[str] = set()
    for text in [*corpus(), template]:
        for tok in specials:
            text = text.replace(tok, " ")
        words.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    vocab = {t: i for i, t in enumerate(specials + sorted(words - set(specials)))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        extra_special_tokens=dict(named),
    )
    tok.add_special_tokens({"additional_special_tokens": [*CHATML, *named.values()]})
    tok.padding_side = "left"
    return tok


def _ids(tok: PreTrainedTokenizerFast) -> dict[str, int | None]:
    """Token ids for the text config: no BOS (as Qwen2 tokenizers), eos `<|im_end|>`, pad `<|endoftext|>`."""
    return dict(bos_token_id=None, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)


def _save(out: Path, model: Any, processor: Any) -> Path:
    tok = processor.tokenizer
    model.generation_config = GenerationConfig(
        eos_token_id=[tok.eos_token_id, tok.pad_token_id], pad_token_id=tok.pad_token_id, do_sample=False
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    return out


# ---- builders -------------------------------------------------------------------------------------------------------
def build_qwen2_5_vl(out: Path) -> Path:
    tok = build_tokenizer(QWEN_VISION, QWEN2_5_VL_TEMPLATE)
    ip = Qwen2VLImageProcessorPil(
        patch_size=8, merge_size=2, temporal_patch_size=2, size={"shortest_edge": 32 * 32, "longest_edge": 64 * 64}
    )
    processor = image_only(Qwen2_5_VLProcessor)(image_processor=ip, tokenizer=tok, chat_template=QWEN2_5_VL_TEMPLATE)
    vision = dict(
        VISION,
        depth=2,
        num_heads=4,
        hidden_act="silu",
        patch_size=8,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=32,  # 32 px = 2×2 merged units per window
        fullatt_block_indexes=[1],
        out_hidden_size=TEXT["hidden_size"],
        tokens_per_second=2,
    )
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    text = dict(TEXT, vocab_size=len(tok), rope_parameters=rope, **_ids(tok))
    cfg = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=processor.image_token_id,
        video_token_id=processor.video_token_id,
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
    )
    torch.manual_seed(SEED)
    return _save(out, Qwen2_5_VLForConditionalGeneration(cfg), processor)


def build_qwen3_vl(out: Path) -> Path:
    tok = build_tokenizer(QWEN_VISION, QWEN3_VL_TEMPLATE)
    ip = Qwen2VLImageProcessorPil(
        patch_size=8,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": 32 * 32, "longest_edge": 64 * 64},
        image_mean=HALF,
        image_std=HALF,
    )
    processor = image_only(Qwen3VLProcessor)(image_processor=ip, tokenizer=tok, chat_template=QWEN3_VL_TEMPLATE)
    vision = dict(
        VISION,
        depth=2,
        num_heads=4,
        hidden_act="gelu_pytorch_tanh",
        patch_size=8,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=TEXT["hidden_size"],
        num_position_embeddings=16,  # a 4×4 grid of learned positions, interpolated to the image's patch grid
        deepstack_visual_indexes=[0, 1],
    )
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3], "mrope_interleaved": True}
    text = dict(TEXT, vocab_size=len(tok), head_dim=16, rope_parameters=rope, **_ids(tok))
    cfg = Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=processor.image_token_id,
        video_token_id=processor.video_token_id,
        vision_start_token_id=processor.vision_start_token_id,
        vision_end_token_id=processor.vision_end_token_id,
    )
    torch.manual_seed(SEED)
    return _save(out, Qwen3VLForConditionalGeneration(cfg), processor)


TILE = 16  # LLaVA-OneVision and InternVL tile side, in pixels
ONEVISION_PINPOINTS = [[16, 16], [16, 32], [32, 16], [32, 48], [48, 32]]  # 64×64 → a 2×3-tile (32×48) canvas


def build_llava_onevision(out: Path) -> Path:
    tok = build_tokenizer(ONEVISION_VISION, ONEVISION_TEMPLATE)
    ip = LlavaOnevisionImageProcessorPil(
        size={"height": TILE, "width": TILE},
        image_grid_pinpoints=ONEVISION_PINPOINTS,
        image_mean=HALF,
        image_std=HALF,
    )
    features = (TILE // 8) ** 2  # SigLIP patch 8: 2×2 features per tile
    processor = image_only(LlavaOnevisionProcessor)(
        image_processor=ip,
        tokenizer=tok,
        num_image_tokens=features,
        vision_feature_select_strategy="full",
        chat_template=ONEVISION_TEMPLATE,
        vision_aspect_ratio="anyres_max_9",
    )
    vision = dict(
        VISION,
        model_type="siglip_vision_model",
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=TILE,
        patch_size=8,
        vision_use_head=False,
    )
    text = dict(TEXT, model_type="qwen2", vocab_size=len(tok), **_ids(tok))
    cfg = LlavaOnevisionConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=processor.image_token_id,
        video_token_index=processor.video_token_id,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=ONEVISION_PINPOINTS,
        vision_aspect_ratio="anyres_max_9",
    )
    torch.manual_seed(SEED)
    model = LlavaOnevisionForConditionalGeneration(cfg)
    # SigLIP's own init (xavier, lecun) ignores initializer_range: widen its matrices to the same N(0, 0.3)
    for param in model.model.vision_tower.parameters():
        if param.dim() > 1:
            torch.nn.init.normal_(param, std=INIT)
    return _save(out, model, processor)


def build_internvl(out: Path) -> Path:
    tok = build_tokenizer(INTERNVL_VISION, INTERNVL_TEMPLATE)
    ip = GotOcr2ImageProcessorPil(
        size={"height": TILE, "width": TILE},
        crop_to_patches=True,
        min_patches=1,
        max_patches=4,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )
    patch = 4
    seq = (TILE // patch) ** 2 // 4  # pixel shuffle with downsample_ratio 0.5: 4×4 patches → 2×2 tokens per tile
    processor = image_only(InternVLProcessor)(
        image_processor=ip, tokenizer=tok, image_seq_length=seq, chat_template=INTERNVL_TEMPLATE
    )
    vision = dict(
        VISION,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=[TILE, TILE],
        patch_size=[patch, patch],
        hidden_act="gelu",
        use_absolute_position_embeddings=True,
    )
    text = dict(TEXT, model_type="qwen2", vocab_size=len(tok), **_ids(tok))
    cfg = InternVLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=processor.image_token_id,
        image_seq_length=seq,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(SEED)
    return _save(out, InternVLForConditionalGeneration(cfg), processor)


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "qwen2_5_vl": build_qwen2_5_vl,
    "qwen3_vl": build_qwen3_vl,
    "llava_onevision": build_llava_onevision,
    "internvl": build_internvl,
}
