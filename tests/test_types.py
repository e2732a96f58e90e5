"""Eight more model types through the generic adapter (issue 15): tiny random-weight models built from configs the way
transformers' own tests build them, with each family's real processor class and chat template
(`tiny_qwen_types`, `tiny_other_types`). Per type: the image group against the processor's own numbers, the wrapper
tokens in neither group, eval with batched == one at a time and sharpness, tracing (resid, mlp, attn) against a plain
ROME-style loop, band corruption and attention knockout; then the refusals (cross-attention, encoder-decoder,
remote code without `--trust-remote-code`)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoConfig

from test_tracing import reference_loop
from tiny_other_types import BUILDERS as OTHER
from tiny_qwen_types import BUILDERS as QWEN
from vrprobe.analyses.band import corrupt_band
from vrprobe.analyses.knockout import edge_edits
from vrprobe.data import load_dataset
from vrprobe.errors import VrprobeError
from vrprobe.interventions import intervene
from vrprobe.models.generic import GenericAdapter
from vrprobe.registry import TESTED_TYPES, load_adapter
from vrprobe.scoring.evaluate import score_batch
from vrprobe.tracing import TraceConfig, Tracer, measure_sigma

from numerics import FORWARD, SUM, assert_close

BUILDERS = {**QWEN, **OTHER}
TYPES = tuple(BUILDERS)


def _mistral_rows(proc) -> int:
    """Pixtral: rows of [IMG] tokens for a 64×64 image (each row ends in [IMG_BREAK], the last in [IMG_END])."""
    ip = proc.image_processor
    return (
        64 // (ip.patch_size * proc.spatial_merge_size)
        if isinstance(ip.patch_size, int)
        else 64 // (ip.patch_size["height"] * proc.spatial_merge_size)
    )


def expected_image_positions(model_type: str, proc) -> int:
    """Image-feature positions for one 64×64 image, from the processor's own numbers (`_get_num_multimodal_tokens`
    counts the whole expanded span for some families: their wrapper tokens are taken out here, by name)."""
    mm = proc._get_num_multimodal_tokens(image_sizes=[(64, 64)])
    total = mm["num_image_tokens"][0]
    if model_type == "internvl":  # <img> + image_seq_length per patch + </img>
        assert total == proc.image_seq_length * mm["num_image_patches"][0] + 2
        return total - 2
    if model_type == "idefics3":  # image_seq_len <image> per split and the global image, plus the wrappers
        return proc.image_seq_len * mm["num_image_patches"][0]
    if model_type == "mistral3":  # rows × (columns + 1): each row's [IMG_BREAK] or the final [IMG_END]
        return total - _mistral_rows(proc)
    return total


#: non-image tokens inside the image span, and the tokens just before and after it
WRAPPERS = {
    "qwen2_5_vl": (set(), "<|vision_start|>", "<|vision_end|>"),
    "qwen3_vl": (set(), "<|vision_start|>", "<|vision_end|>"),
    "llava_onevision": (set(), None, None),  # newline features are image-feature positions
    "internvl": (set(), "<img>", "</img>"),
    "gemma3": (set(), "<start_of_image>", "<end_of_image>"),
    "llava_next": (set(), None, None),
    "idefics3": ({"<fake_token_around_image>", "<global-img>", "\n", "<row_1_col_2>", "<row_2_col_1>",
                  "<row_2_col_2>"}, "<row_1_col_1>", "<fake_token_around_image>"),
    "mistral3": ({"[IMG_BREAK]"}, None, "[IMG_END]"),
}  # fmt: skip


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("types")
    cache: dict[str, object] = {}

    def get(model_type):
        if model_type not in cache:
            cache[model_type] = load_adapter(str(BUILDERS[model_type](root / model_type)))
        return cache[model_type]

    return get


@pytest.fixture(scope="module")
def samples():
    return load_dataset("easy-vqa:test", limit=6, seed=1).samples


def test_every_built_type_is_listed_as_tested():
    assert set(TYPES) <= set(TESTED_TYPES) and len(TYPES) == 8


@pytest.mark.parametrize("model_type", TYPES)
def test_image_group_is_what_the_processor_inserted(model_type, built, samples):
    a = built(model_type)
    assert type(a) is GenericAdapter and a.family == model_type
    batch = a.encode_samples(samples[:2])
    ids, groups = batch.inputs["input_ids"][0], batch.groups
    n = expected_image_positions(model_type, a.processor)
    assert int(groups.image[0].sum()) == n and int(groups.image[1].sum()) == n
    where = groups.image[0].nonzero().flatten()
    first, last = int(where[0]), int(where[-1])
    inside = {a.tokenizer.convert_ids_to_tokens(int(t)) for t in ids[first:last][~groups.image[0, first:last]]}
    inner, before, after = WRAPPERS[model_type]
    if model_type == "idefics3":
        inside = {"\n" if t in ("\n", "Ċ") else t for t in inside}
    assert inside == inner
    for pos, name in ((first - 1, before), (last + 1, after)):
        if name is not None:
            assert a.tokenizer.convert_ids_to_tokens(int(ids[pos])) == name
            assert not groups.image[0, pos] and not groups.question[0, pos]  # wrappers: in neither group
    wrappers = ~groups.image[0, first : last + 1]
    assert not groups.question[0, first : last + 1][wrappers].any()
    q0, q1 = batch.items[0].question_span
    decoded = a.tokenizer.decode(batch.items[0].inputs["input_ids"][0, q0:q1])
    assert decoded.replace(" ", "") == samples[0].text.lower().replace(" ", "")  # word-level: spaces around "?"
    # the prompt is the chat template's, generation prompt included, and the answer anchor ends it
    assert a.prompt("why?").endswith(a.answer_anchor)


@pytest.mark.parametrize("model_type", TYPES)
def test_eval_batched_equals_one_at_a_time_with_sharpness(model_type, built, samples):
    a = built(model_type)
    rows = score_batch(a, samples)
    one = [score_batch(a, [s])[0] for s in samples]
    for r, o in zip(rows, one, strict=True):
        assert r["predicted"] == o["predicted"]
        assert_close(r["confidence"], o["confidence"], dtype=torch.float32, scale=1.0, ulps=FORWARD)
        assert_close(r["sharpness"], o["sharpness"], dtype=torch.float32, ulps=FORWARD, what="sharpness (nats)")
        n_img = expected_image_positions(model_type, a.processor)
        assert 0 <= r["sharpness"] <= math.log(n_img) + 1e-6  # nats over the image positions
    assert len({round(r["confidence"], 6) for r in rows}) > 1  # the inputs matter


@pytest.mark.parametrize("model_type", TYPES)
def test_trace_equals_plain_loop(model_type, built, samples):
    """resid, mlp and attn restorations at every layer × group, against one forward per restoration (Qwen3-VL: with
    its deepstack features added between layers, as the model adds them)."""
    a = built(model_type)
    cfg = TraceConfig(noise_samples=2, window=2)
    tracer = Tracer(a, measure_sigma(a, samples[:4]), cfg)
    sample = samples[2]
    trace = tracer.trace(sample, index=0)
    ref = reference_loop(a, sample, tracer, cfg)
    assert_close(trace.p_restored, ref, scale=1.0, ulps=FORWARD, what="engine vs plain loop (probability)")
    assert set(cfg.kinds) == {"resid", "mlp", "attn"}


@pytest.mark.parametrize("model_type", TYPES)
def test_band_corruption_and_knockout(model_type, built, samples):
    a = built(model_type)
    s = corrupt_band(a, samples[:4], (1, 2), target="both", noise=8.0, batch_size=4).summary()
    assert s["n"] == 4 and s["accuracy_corrupted"] <= 1 and s["sharpness_clean"] >= 0
    quiet = corrupt_band(a, samples[:2], (1, 2), target="hidden", noise=0.0, batch_size=2).summary()
    assert quiet["drop_abs"] == 0 and quiet["sharpness_clean"] == quiet["sharpness_corrupted"]
    # blocking every image key for text queries at every layer makes the answer blind to the image
    edits = edge_edits(["image->question", "image->last"], range(a.num_layers))  # question: every text token
    other = [replace(x, image_fn=samples[(i + 3) % len(samples)].load_image) for i, x in enumerate(samples[:3])]
    out = []
    for chunk in (samples[:3], other):
        batch = a.encode_samples(chunk)
        with torch.no_grad(), intervene(a, batch.groups, edits=edits):
            out.append(a.forward(batch, use_cache=False, logits_to_keep=1).logits[:, -1])
    torch.testing.assert_close(out[0], out[1], rtol=1e-5, atol=1e-5)


def _config_dir(tmp_path, model_type, **extra):
    d = tmp_path / model_type
    AutoConfig.for_model(model_type, **extra).save_pretrained(d)
    return d


@pytest.mark.parametrize(
    ("model_type", "reason"),
    [
        ("mllama", "cross-attention"),
        ("idefics", "cross-attention"),
        ("florence2", "encoder-decoder"),
        ("pix2struct", "encoder-decoder"),
    ],
)
def test_refuses_vlms_without_image_tokens_in_the_decoder(model_type, reason, tmp_path):
    with pytest.raises(VrprobeError, match=f"not supported: .*{reason}.*tested types: llava") as err:
        load_adapter(str(_config_dir(tmp_path, model_type)))
    assert "\n" not in str(err.value) and "qwen3_vl" in str(err.value)


def test_remote_code_needs_the_flag(tmp_path):
    d = tmp_path / "remote"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "my_vlm", "auto_map": {"AutoConfig": "cfg.MyConfig"}}))
    with pytest.raises(VrprobeError, match="pass --trust-remote-code"):
        load_adapter(str(d))
    (d / "config.json").write_text(json.dumps({"model_type": "my_vlm"}))
    with pytest.raises(VrprobeError, match="transformers does not know it"):
        load_adapter(str(d))


REMOTE_CONFIG = """from transformers import LlavaConfig


class RemoteLlavaConfig(LlavaConfig):
    model_type = "remote_llava"
"""
REMOTE_MODEL = """from transformers import LlavaForConditionalGeneration

from .configuration_remote import RemoteLlavaConfig


class RemoteLlava(LlavaForConditionalGeneration):
    config_class = RemoteLlavaConfig
"""
#: LLaVA-1.5's conversation format as a chat template: renders exactly `LlavaAdapter.prompt`
LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)


def test_remote_code_runs_only_with_the_flag_and_the_generic_adapter_matches_llava(tmp_path, samples):
    """A checkpoint whose model type exists only in code shipped with it (the zoo LLaVA's weights under a new
    `model_type`, with LLaVA-1.5's format as its chat template): refused without `trust_remote_code`; with it, the
    generic adapter builds the same prompt as `LlavaAdapter` and gives the same scores."""
    zoo = load_adapter("zoo:llava")
    d = tmp_path / "remote_llava"
    zoo.model.save_pretrained(d)
    zoo.processor.save_pretrained(d)
    # the weights under the names the model holds them (save_pretrained writes LLaVA's legacy names, which
    # transformers maps back for model_type "llava" only)
    save_file({k: v.contiguous() for k, v in zoo.model.state_dict().items()}, d / "model.safetensors", {"format": "pt"})
    config = json.loads((d / "config.json").read_text())
    config.update(
        model_type="remote_llava",
        architectures=["RemoteLlava"],
        auto_map={
            "AutoConfig": "configuration_remote.RemoteLlavaConfig",
            "AutoModelForImageTextToText": "modeling_remote.RemoteLlava",
        },
    )
    (d / "config.json").write_text(json.dumps(config))
    (d / "configuration_remote.py").write_text(REMOTE_CONFIG)
    (d / "modeling_remote.py").write_text(REMOTE_MODEL)
    (d / "chat_template.jinja").write_text(LLAVA_TEMPLATE)
    with pytest.raises(VrprobeError, match="pass --trust-remote-code"):
        load_adapter(str(d))
    remote = load_adapter(str(d), trust_remote_code=True)
    assert type(remote) is GenericAdapter and remote.family == "remote_llava"
    assert remote.prompt("what shape?") == zoo.prompt("what shape?")
    for r, z in zip(score_batch(remote, samples), score_batch(zoo, samples), strict=True):
        assert r["predicted"] == z["predicted"]
        assert_close(r["confidence"], z["confidence"], dtype=torch.float32, scale=1.0, ulps=SUM)
