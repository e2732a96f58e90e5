"""The zoo training recipe (CPU, seeded): teach the image pathway first, then the whole VLM on all questions.

Stage 1 (`stage1_steps`): the vision tower + projector alone, with linear heads on their projected features trained
with cross-entropy (`stage1_labels.py` gives the labels). easy-VQA: the features mean-pooled over image tokens feed two
heads (3 shapes, 8 colors), per-image labels from the train questions. scenes: every image token's features feed
three heads (colour, shape, size of the object that covers most of its cell, or background), labels from the scene's
objects. Without this stage a VLM trained from scratch ignores the image (~0.67 accuracy on easy-VQA, question-only
guessing; see shared/ZOO-TRAINING.md).
Stage 2 (`stage2_steps`): the whole model on all train questions; loss = cross-entropy on the answer token and on the
end-of-sequence token after it (so greedy generation stops cleanly). AdamW, linear warm-up then cosine decay to 0,
gradient-norm clip 1.0; the vision pathway at `vision_lr_scale` × the learning rate.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from vrprobe.data.easy_vqa import load_easy_vqa
from vrprobe.data.sample import Sample
from vrprobe.data.scenes import load_scenes
from vrprobe.models.base import TEXT_KEYS, Adapter, Encoded
from vrprobe.zoo.build import build_adapter, save_checkpoint
from vrprobe.zoo.catalog import zoo_model
from vrprobe.zoo.stage1_labels import easy_vqa_labels, scenes_labels

Progress = Callable[[str, int, int, float], None]  # (stage, step, total, loss)


@dataclass
class TrainConfig:
    """The recipe's knobs; the defaults are the ones the committed easy-VQA zoo was trained with (`recipe(name)`
    gives each zoo model's)."""

    seed: int = 0
    stage1_steps: int = 1500
    stage1_batch: int = 128
    stage1_lr: float = 2e-3
    stage2_steps: int = 2500
    stage2_batch: int = 64
    lr: float = 1e-3
    warmup: int = 100
    vision_lr_scale: float = 0.1
    weight_decay: float = 0.01
    threads: int | None = None


#: the scenes models' recipe: longer stage 1 (dense labels, a wider tower), as many stage-2 steps as fit the hour at
#: one thread each (llava-scenes 2,796 s, paligemma-scenes 2,951 s, trained side by side on 2 cores).
SCENES = TrainConfig(stage1_steps=1200, stage1_batch=64, stage2_steps=3000, stage2_batch=64)

#: Qwen2-VL's steps cost about twice as much (a 256-patch tower before its 2x2 merge, M-RoPE position ids), so its
#: recipe is shorter to fit the hour.
RECIPES = {"qwen2vl-scenes": replace(SCENES, stage1_steps=800, stage2_steps=1500)}


def recipe(name: str) -> TrainConfig:
    """The zoo model's full training recipe: `RECIPES` where a model has its own, else its dataset's."""
    return RECIPES.get(name) or (SCENES if zoo_model(name).dataset == "scenes" else TrainConfig())


def _text_params(adapter: Adapter) -> set[int]:
    model = adapter.model
    ids = {id(p) for p in model.get_decoder().parameters()}
    ids |= {id(p) for p in model.get_output_embeddings().parameters()}
    ids |= {id(p) for p in model.get_input_embeddings().parameters()}
    return ids


def vision_parameters(adapter: Adapter) -> list[torch.nn.Parameter]:
    """Parameters of the image pathway (vision tower + projector): everything outside the language model."""
    text = _text_params(adapter)
    return [p for p in adapter.model.parameters() if id(p) not in text]


def _cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


class TrainData:
    """The training questions, pre-processed once: per-image pixel inputs, per-wording text inputs, and the stage-1
    labels (`labels`: name → [n_images] per-image or [n_images, n_image_tokens] per-token class ids, -100 = none)."""

    def __init__(self, adapter: Adapter, dataset: str) -> None:
        samples = load_scenes("train") if dataset == "scenes" else load_easy_vqa("train")
        image_ids = sorted({s.meta["image_id"] for s in samples})
        self.image_index = {iid: i for i, iid in enumerate(image_ids)}
        by_image: dict[object, Sample] = {}
        for s in samples:
            by_image.setdefault(s.meta["image_id"], s)
        probe_q = samples[0].question
        self.images: list[dict[str, torch.Tensor]] = []
        encoded: list[Encoded] = []
        for iid in image_ids:
            enc = adapter.encode_one(by_image[iid].load_image(), probe_q)
            self.images.append({k: v for k, v in enc.inputs.items() if k not in TEXT_KEYS})
            encoded.append(enc)
        first_image = by_image[image_ids[0]].load_image()
        wordings = sorted({s.question for s in samples})
        self.texts: dict[str, Encoded] = {}
        for q in wordings:
            enc = adapter.encode_one(first_image, q)
            self.texts[q] = Encoded({k: v for k, v in enc.inputs.items() if k in TEXT_KEYS}, enc.question_span)
        self.rows = [(s.question, s.answers[0], self.image_index[s.meta["image_id"]]) for s in samples]
        if dataset == "scenes":
            firsts = [by_image[iid] for iid in image_ids]
            self.labels = scenes_labels(adapter, firsts, encoded)
        else:
            self.labels = easy_vqa_labels(len(image_ids), [(a, img) for _q, a, img in self.rows])

    def image_batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = [self.images[i] for i in idx.tolist()]
        return {k: torch.cat([p[k] for p in parts], 0) for k in parts[0]}

    def qa_batch(self, adapter: Adapter, idx: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        items, targets = [], []
        for i in idx.tolist():
            q, a, img = self.rows[i]
            ans = adapter.answer_ids(a)
            text = adapter.extend(self.texts[q], ans + [adapter.eos_token_id])
            items.append(Encoded({**text.inputs, **self.images[img]}, text.question_span))
            targets.append(ans + [adapter.eos_token_id])
        return adapter.collate(items).inputs, torch.tensor(targets)


def train_stage1(adapter: Adapter, data: TrainData, cfg: TrainConfig, progress: Progress | None) -> float:
    dim = adapter.model.config.text_config.hidden_size
    classes = {name: int(labels.max()) + 1 for name, labels in data.labels.items()}
    heads = torch.nn.ModuleDict({name: torch.nn.Linear(dim, n) for name, n in classes.items()})
    params = vision_parameters(adapter) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.stage1_lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    loss_val = float("nan")
    for step in range(cfg.stage1_steps):
        idx = torch.randint(len(data.images), (cfg.stage1_batch,), generator=gen)
        feats = adapter.image_features(data.image_batch(idx))  # [B, N, D]
        pooled = feats.mean(1)
        loss = torch.zeros(())
        for name, head in heads.items():
            target = data.labels[name][idx]
            logits = head(pooled) if target.dim() == 1 else head(feats).flatten(0, 1)
            loss = loss + F.cross_entropy(logits, target.flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_val = loss.item()
        if progress:
            progress("stage 1: image pathway", step + 1, cfg.stage1_steps, loss_val)
    return loss_val


def train_stage2(adapter: Adapter, data: TrainData, cfg: TrainConfig, progress: Progress | None) -> float:
    vision = {id(p) for p in vision_parameters(adapter)}
    base_lrs = [cfg.lr, cfg.lr * cfg.vision_lr_scale]  # the text model's, the image pathway's
    groups = [
        {"params": [p for p in adapter.model.parameters() if id(p) not in vision], "lr": base_lrs[0]},
        {"params": [p for p in adapter.model.parameters() if id(p) in vision], "lr": base_lrs[1]},
    ]
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    loss_val = float("nan")
    for step in range(cfg.stage2_steps):
        scale = _cosine(step, cfg.stage2_steps, cfg.warmup)
        for g, lr in zip(opt.param_groups, base_lrs, strict=True):
            g["lr"] = lr * scale
        idx = torch.randint(len(data.rows), (cfg.stage2_batch,), generator=gen)
        inputs, targets = data.qa_batch(adapter, idx)
        logits = adapter.model(**inputs).logits[:, -3:-1]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(adapter.model.parameters(), 1.0)
        opt.step()
        loss_val = loss.item()
        if progress:
            progress("stage 2: whole VLM", step + 1, cfg.stage2_steps, loss_val)
    return loss_val


def train(name: str, out: Path, cfg: TrainConfig | None = None, progress: Progress | None = None) -> dict:
    """Build, train and save one zoo model to `out` (model + processor via `save_pretrained`, and `train_log.json`)."""
    cfg = cfg or recipe(name)
    zoo = zoo_model(name)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    adapter = build_adapter(name, seed=cfg.seed)
    adapter.model.config._attn_implementation = "sdpa"
    t0 = time.perf_counter()
    data = TrainData(adapter, zoo.dataset)
    adapter.model.train()
    loss1 = train_stage1(adapter, data, cfg, progress)
    t1 = time.perf_counter()
    loss2 = train_stage2(adapter, data, cfg, progress)
    t2 = time.perf_counter()
    adapter.model.eval()
    save_checkpoint(adapter, out)
    log = {
        "name": name,
        "family": zoo.family,
        "dataset": zoo.dataset,
        "image_tokens": zoo.image_tokens,
        "threads": torch.get_num_threads(),
        "params": adapter.num_params,
        "config": asdict(cfg),
        "stage1_seconds": round(t1 - t0, 1),
        "stage2_seconds": round(t2 - t1, 1),
        "total_seconds": round(t2 - t0, 1),
        "final_loss_stage1": loss1,
        "final_loss_stage2": loss2,
        "torch": torch.__version__,
    }
    (out / "train_log.json").write_text(json.dumps(log, indent=2) + "\n")
    return log
