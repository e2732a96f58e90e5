"""Real-format tests: tiny random-weight checkpoints with the real tokenizers, processors, chat templates, vocabularies,
token ids and image sizes of llava-1.5-7b-hf, Qwen2-VL-2B and paligemma-3b-pt-224 (built by `tests/replicas.py` from
`../shared/replicas`), checked through vrprobe's public API and command line.

Skipped when `../shared/replicas` is absent; CI has it. Each checkpoint is built once per session into a tmp dir.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import replicas
import vrprobe
from vrprobe.data import load_dataset
from vrprobe.data.vqa import VQA_INSTRUCTION
from vrprobe.runtime.runs import read_records
from vrprobe.scoring.evaluate import score_batch

from conftest import run_cli
from fixtures import write_scienceqa, write_vqav2
from numerics import FORWARD, assert_close

FAMILIES = replicas.FAMILIES
pytestmark = pytest.mark.skipif(
    not replicas.available(), reason=f"real checkpoint files: ../shared/replicas is absent ({replicas.REPLICAS})"
)
#: image tokens the real checkpoints give every image (LLaVA-1.5: (336/14)² = 576; PaliGemma-224: (224/14)² = 256)
FIXED_IMAGE_TOKENS = {"llava": 576, "paligemma": 256}


@pytest.fixture(scope="session")
def replica_dir(tmp_path_factory):
    """family -> the checkpoint directory, built on first use."""
    built = {}

    def get(family):
        if family not in built:
            built[family] = replicas.build(family, tmp_path_factory.mktemp(f"replica-{family}"))
        return built[family]

    return get


@pytest.fixture(scope="session")
def replica(replica_dir):
    """family -> the checkpoint loaded with `vrprobe.load_adapter`, loaded on first use."""
    loaded = {}

    def get(family):
        if family not in loaded:
            loaded[family] = vrprobe.load_adapter(str(replica_dir(family)))
        return loaded[family]

    return get


@pytest.fixture(scope="module")
def easy():
    return load_dataset("easy-vqa:test", limit=6, seed=5).samples


@pytest.fixture(scope="module")
def benchmark_samples(tmp_path_factory):
    """Two VQA v2 (open-ended) and two ScienceQA (multiple choice) samples from the on-disk fixtures."""
    root = tmp_path_factory.mktemp("benchmarks")
    vqa = load_dataset(f"vqav2:{write_vqav2(root / 'vqav2', n=2)}").samples
    sqa = load_dataset(f"scienceqa:{write_scienceqa(root / 'sqa', n=3)}").samples[:2]
    return vqa + sqa


def user_turn(question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def chat_prompt(family: str, adapter, question: str, answer: str | None = None) -> str:
    """The prompt (and, with `answer`, the conversation up to it) as the checkpoint's processor renders it.

    LLaVA: the checkpoint's own chat template. Qwen2-VL: the Instruct template (`chat_template.instruct.json`), the
    format vrprobe's Qwen2-VL prompt follows; the base checkpoint's own template has no roles (checked below).
    """
    messages = user_turn(question)
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    kwargs = {}
    if family == "qwen2vl":
        instruct = json.loads((replicas.replica(family) / "chat_template.instruct.json").read_text())
        kwargs["chat_template"] = instruct["chat_template"]
    return adapter.processor.apply_chat_template(messages, add_generation_prompt=answer is None, **kwargs)


def image(size=(64, 64), color="teal") -> Image.Image:
    return Image.new("RGB", size, color)


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_keeps_the_real_vocabulary_ids_and_sizes(family, replica):
    adapter = replica(family)
    real = json.loads((replicas.replica(family) / "config.json").read_text())
    cfg = adapter.model.config
    assert cfg.get_text_config().vocab_size == real.get("vocab_size", real.get("text_config", {}).get("vocab_size"))
    assert adapter.image_token_id == real.get("image_token_index", real.get("image_token_id"))
    assert adapter.num_layers == 2 and cfg.get_text_config().hidden_size == 64  # shrunk: width and depth only
    tok = adapter.tokenizer
    if family == "llava":
        assert [tok.convert_tokens_to_ids(t) for t in ("<image>", "<pad>", "<s>", "</s>")] == [32000, 32001, 1, 2]
        assert adapter.pad_token_id == real["pad_token_id"]
        assert cfg.vision_config.image_size == 336 and cfg.vision_config.patch_size == 14
    elif family == "paligemma":
        added = json.loads((replicas.replica(family) / "added_tokens.json").read_text())
        ids = [tok.convert_tokens_to_ids(t) for t in ("<loc0000>", "<loc1023>", "<seg000>", "<seg127>", "<image>")]
        assert ids == [256000, 257023, 257024, 257151, added["<image>"]]
        real_ids = tuple(real[f"{k}_token_id"] for k in ("pad", "eos", "bos"))
        assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == real_ids == (0, 1, 2)
        assert cfg.vision_config.image_size == 224 and cfg.vision_config.patch_size == 14
    else:
        names = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|im_start|>", "<|im_end|>")
        ids = [tok.convert_tokens_to_ids(t) for t in names]
        real_ids = [real[f"{k}_token_id"] for k in ("vision_start", "vision_end", "image")]
        assert ids == [*real_ids, 151644, 151645]
        assert adapter.pad_token_id == 151643 and adapter.eos_token_id == 151645
        assert cfg.vision_config.patch_size == 14 and cfg.vision_config.spatial_merge_size == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_is_what_the_checkpoint_processor_builds(family, replica, easy):
    adapter = replica(family)
    question = easy[0].question
    batch = adapter.encode([image()], [question])
    ids = batch.inputs["input_ids"][0].tolist()
    if family == "paligemma":  # no chat template: PaliGemma's format is image tokens, <bos>, prefix, "\n"
        assert adapter.processor.chat_template is None
        assert adapter.prompt(question) == f"<image>answer en {question}"
        expected = "<image>" * 256 + f"<bos>answer en {question}\n"
        assert ids == adapter.tokenizer(expected, add_special_tokens=False)["input_ids"]
        return
    prompt = chat_prompt(family, adapter, question)
    assert adapter.prompt(question) == prompt
    assert ids == adapter.processor(text=[prompt], images=[image()], return_tensors="pt")["input_ids"][0].tolist()
    if family == "llava":  # the saved processor encodes exactly as the hub files it was made from
        from transformers import AutoProcessor

        hub = AutoProcessor.from_pretrained(str(replicas.replica(family)))
        assert ids == hub(text=[prompt], images=[image()], return_tensors="pt")["input_ids"][0].tolist()
    else:  # the base checkpoint keeps its own role-less template; vrprobe asks in the Instruct format
        base = json.loads((replicas.replica(family) / "chat_template.json").read_text())["chat_template"]
        assert adapter.processor.chat_template == base


@pytest.mark.parametrize("family", FAMILIES)
def test_question_span_decodes_to_the_question(family, replica, easy, benchmark_samples):
    adapter = replica(family)
    samples = [*easy, *benchmark_samples]
    texts = [adapter.question_text(s) for s in samples]
    for group in (samples[:6], samples[6:8], samples[8:]):  # one encode per kind of sample (no mixed batches)
        batch = adapter.encode_samples(group)
        ids = batch.inputs["input_ids"]
        for row, s in enumerate(group):
            words = adapter.tokenizer.decode(ids[row][batch.groups.question[row]].tolist())
            assert words.strip() == adapter.question_text(s)
            assert not (batch.groups.question[row] & batch.groups.image[row]).any()
    assert len(set(texts)) > 3


@pytest.mark.parametrize("family", FAMILIES)
def test_each_candidate_decodes_to_itself_and_follows_the_prompt(family, replica, easy):
    adapter = replica(family)
    tok = adapter.tokenizer
    question = easy[0].question
    prompt_ids = adapter.encode([image()], [question]).inputs["input_ids"][0].tolist()
    for answer in (*easy[0].choices, "A", "B", "C"):  # easy-VQA's 13 answers and ScienceQA's letters
        ids = adapter.answer_ids(answer)
        assert ids and tok.decode(ids).strip() == answer
        if family == "paligemma":  # the processor's own suffix encoding: token_type_ids 1, then <eos>
            prompt = adapter.prompt(question)
            enc = adapter.processor(text=[prompt], images=[image()], suffix=[answer], return_tensors="pt")
            full, types = enc["input_ids"][0].tolist(), enc["token_type_ids"][0].tolist()
            assert full[: len(prompt_ids)] == prompt_ids
            assert [t for t, k in zip(full, types, strict=True) if k == 1] == [*ids, tok.eos_token_id]
        else:  # the whole conversation with this answer, as the chat template renders and the processor encodes it
            text = chat_prompt(family, adapter, question, answer)
            full = adapter.processor(text=[text], images=[image()], return_tensors="pt")["input_ids"][0].tolist()
            assert full[: len(prompt_ids) + len(ids)] == prompt_ids + ids


@pytest.mark.parametrize("family", FAMILIES)
def test_image_token_counts(family, replica):
    adapter = replica(family)
    images = [image((64, 64)), image((320, 240), "navy")]
    batch = adapter.encode(images, ["What shape is in the image?", "Is there a red shape?"])
    counts = batch.groups.image.sum(1).tolist()
    if family in FIXED_IMAGE_TOKENS:
        expected = [FIXED_IMAGE_TOKENS[family]] * 2
    else:  # Qwen2-VL: the processor's own grid (t, h, w) in 14-px patches, merged 2×2
        merge = adapter.processor.image_processor.merge_size
        expected = (batch.inputs["image_grid_thw"].prod(-1) // merge**2).tolist()
        assert expected == [4, 99]  # 64×64 -> 56×56 (min_pixels 3136), 320×240 -> 308×252
    assert counts == expected
    assert torch.equal(batch.groups.image, batch.inputs["input_ids"] == adapter.model.config.image_token_id)
    for one, count in zip(images, counts, strict=True):  # the projector gives as many features as image tokens
        assert adapter.image_features(adapter.encode([one], ["Why?"]).inputs).shape[1] == count


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_scores_equal_one_at_a_time(family, replica, easy):
    adapter = replica(family)
    together = score_batch(adapter, easy[:4])
    alone = [score_batch(adapter, [s])[0] for s in easy[:4]]
    assert len({len(adapter.encode_one(s.load_image(), s.question).inputs["input_ids"][0]) for s in easy[:4]}) > 1
    spread = 0.0
    for a, b in zip(together, alone, strict=True):
        assert a["predicted"] == b["predicted"]
        assert_close(a["probs"], b["probs"], dtype=torch.float32, scale=1.0, ulps=FORWARD, what="batched vs alone")
        assert_close(a["sharpness"], b["sharpness"], dtype=torch.float32, ulps=FORWARD, what="sharpness (nats)")
        spread = max(spread, max(abs(x - y) for x, y in zip(a["probs"], together[0]["probs"], strict=True)))
    assert spread > 1e-2  # the samples really get different scores, so agreeing to 1e-4 means something


@pytest.mark.parametrize("family", FAMILIES)
def test_eval_and_trace_run(family, replica_dir, tmp_path):
    path = str(replica_dir(family))
    result = vrprobe.eval(path, "easy-vqa:test", limit=4, batch_size=2, out=tmp_path / "eval", make_report=False)
    assert result.summary["n"] == 4 == len(read_records(tmp_path / "eval"))
    assert all(r["predicted"] in r["choices"] and 0 < r["confidence"] <= 1 for r in result.records)
    traced = vrprobe.trace(path, "easy-vqa:test", limit=2, kinds=("resid", "attn"), noise_samples=2)
    assert traced.summary["n"] == 2 and traced.summary["sigma"] > 0
    assert {r["layer"] for r in traced.rows} == {0, 1}
    assert {r["group"] for r in traced.rows} == {"image", "question", "last"}
    assert all(0 <= r["p_restored"] <= 1 for r in traced.rows)


def test_paligemma_open_ended_prompt_is_answer_en_question(replica, benchmark_samples):
    """PaliGemma asks VQA as `answer en {question}` (its own format), on the zoo model and on the real-format one;
    LLaVA and Qwen2-VL keep lmms-eval's instruction on its own line; closed-set samples keep `Sample.text`."""
    vqa, sqa = benchmark_samples[0], benchmark_samples[2]
    assert vqa.choices is None and sqa.choices
    prompt = f"<image>answer en {vqa.question}"
    for adapter in (vrprobe.load_adapter("zoo:paligemma"), replica("paligemma")):
        assert adapter.prompt(adapter.question_text(vqa)) == prompt
        ids = adapter.encode_samples([vqa]).inputs["input_ids"][0].tolist()
        expected = adapter.processor(text=[prompt], images=[vqa.load_image()], return_tensors="pt")
        assert ids == expected["input_ids"][0].tolist()
        assert adapter.question_text(sqa) == sqa.text
    for family in ("llava", "qwen2vl"):
        assert replica(family).question_text(vqa) == f"{vqa.question}\n{VQA_INSTRUCTION}"


@pytest.mark.slow
def test_study_runs_on_the_three_checkpoints_from_the_command_line(replica_dir, tmp_path):
    vqa = write_vqav2(tmp_path / "vqav2", n=2)
    models = ",".join(str(replica_dir(f)) for f in FAMILIES)
    out = tmp_path / "study"
    res = run_cli(
        "--quiet",
        "study",
        "--models",
        models,
        "--data",
        f"easy-vqa:test,vqav2:{vqa}",
        "--limit",
        "4",
        "--trace-limit",
        "2",
        "--probe-limit",
        "8",
        "--max-new-tokens",
        "2",
        "--batch-size",
        "4",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    table = json.loads((out / "summary.json").read_text())["table"]
    assert len(table) == 3 * 2
    assert {row["model"] for row in table} == set(models.split(","))
    for row in table:
        assert row["n"] > 0 and 0 <= row["accuracy"] <= 1 and len(row["band"]) == 2
    assert (out / "report.html").is_file()
