"""Dataset spec strings → lists of `Sample`.

Grammar, optionally followed by `?OPTION=VALUE[&OPTION=VALUE]` image shifts (see `vrprobe.data.shift`): `noise=0.3`
(Gaussian pixel noise, std in [0, 1] pixel units) and `occlude=0.25` (a random grey patch over that fraction, in
[0, 1], of the image), seeded per sample; anything else after `?` is refused.

- `easy-vqa:SPLIT` (the data shipped in the `easy-vqa` package) or `easy-vqa:DIR:SPLIT` (a local copy, same layout).
- `vqav2:PATH[:SPLIT]`, `okvqa:PATH[:SPLIT]`, `scienceqa:PATH[:SPLIT]`: a local copy of the benchmark.
  PATH is either a folder in the official JSON layout (`vrprobe.data.vqa`, `vrprobe.data.scienceqa`; SPLIT defaults
  to `val2014` for VQA v2 / OK-VQA and `test` for ScienceQA, image questions only), or a `.parquet` file or a folder
  of parquet files shaped like the lmms-lab exports (`vrprobe.data.parquet`; SPLIT picks `SPLIT-*.parquet` files or a
  `SPLIT` sub-folder). A folder is read as JSON when it holds the JSON layout's questions file (`problems.json` for
  ScienceQA), as parquet when it holds `.parquet` files instead. The last `:` starts SPLIT unless what follows it
  contains a path separator.
- `gqa:PATH[:SPLIT]`: GQA in its official layout (`vrprobe.data.gqa`: `{SPLIT}_balanced_questions.json`, optional
  `{SPLIT}_sceneGraphs.json`, `images/`; SPLIT defaults to `val`), open-ended, boxes from the scene graphs.
- `pope:PATH[:SPLIT]`: POPE, SPLIT `random` (default), `popular` or `adversarial` (`vrprobe.data.pope`): the
  JSON-lines `coco_pope_{SPLIT}.json` with COCO val2014 images, or the lmms-lab parquet export; yes/no, boxes of the
  asked object from `instances_val2014.json` when it is in PATH or `PATH/annotations/`.
- `scenes:SPLIT`, SPLIT `train`, `test` or `lures`: the built-in procedural grounding benchmark (`vrprobe.data.scenes`;
  no files, exact target boxes, four question kinds, a lure object in `lures`).

Known names: `easy-vqa`, `vqav2`, `okvqa`, `scienceqa`, `gqa`, `pope`, `scenes`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from vrprobe import checks
from vrprobe.data.easy_vqa import load_easy_vqa
from vrprobe.data.gqa import load_gqa
from vrprobe.data.parquet import is_parquet_source, load_parquet
from vrprobe.data.pope import load_pope
from vrprobe.data.sample import Sample
from vrprobe.data.scenes import SPLITS as SCENES_SPLITS
from vrprobe.data.scenes import load_scenes
from vrprobe.data.scienceqa import load_scienceqa
from vrprobe.data.shift import parse_shifts, shift_images
from vrprobe.data.vqa import load_okvqa, load_vqav2
from vrprobe.errors import UsageError, VrprobeError

IMAGE_ABLATIONS = ("blank",)
KNOWN = (
    "easy-vqa:SPLIT",
    "easy-vqa:DIR:SPLIT",
    "vqav2:PATH[:SPLIT]",
    "okvqa:PATH[:SPLIT]",
    "scienceqa:PATH[:SPLIT]",
    "gqa:PATH[:SPLIT]",
    "pope:PATH[:SPLIT]",
    "scenes:SPLIT",
)
GROUNDED_LOADERS = {"gqa": load_gqa, "pope": load_pope}
JSON_LOADERS = {"vqav2": load_vqav2, "okvqa": load_okvqa, "scienceqa": load_scienceqa}
JSON_MARKERS = {
    "vqav2": "v2_OpenEnded_mscoco_*_questions.json",
    "okvqa": "OpenEnded_mscoco_*_questions.json",
    "scienceqa": "problems.json",
}


@dataclass(frozen=True)
class Dataset:
    """A named, ordered list of samples; `spec` is the string it was loaded from."""

    spec: str
    samples: list[Sample]

    def __len__(self) -> int:
        return len(self.samples)


def load_dataset(spec: str, *, limit: int | None = None, seed: int = 0, image_ablation: str | None = None) -> Dataset:
    """Parse `spec`, load its samples, optionally take a type-stratified subset and ablate the images.

    Raises `UsageError` for a malformed spec, `limit` or `seed` and `VrprobeError` for missing files or an empty
    dataset.
    """
    checks.options(limit=limit, seed=seed)
    if not isinstance(spec, str):
        raise UsageError(f"a dataset spec is a string such as easy-vqa:test, got {spec!r}")
    base, _, query = spec.partition("?")
    shifts = parse_shifts(query) if query else {}
    name, _, rest = base.partition(":")
    if name == "easy-vqa":
        parts = rest.rsplit(":", 1) if rest else []
        if len(parts) == 1:
            samples = load_easy_vqa(parts[0])
        elif len(parts) == 2:
            root = Path(parts[0])
            if not root.is_dir():
                raise VrprobeError(f"dataset folder not found: {root}")
            samples = load_easy_vqa(parts[1], root)
        else:
            raise UsageError("easy-vqa spec is easy-vqa:SPLIT or easy-vqa:DIR:SPLIT (SPLIT: train or test)")
    elif name in JSON_LOADERS:
        samples = load_benchmark(name, rest)
    elif name in GROUNDED_LOADERS:
        samples = GROUNDED_LOADERS[name](*path_and_split(name, rest))
    elif name == "scenes":
        if rest not in SCENES_SPLITS:
            raise UsageError(f"scenes spec is scenes:SPLIT with SPLIT one of {', '.join(SCENES_SPLITS)}; got '{base}'")
        samples = load_scenes(rest)
    else:
        raise UsageError(f"unknown dataset '{name}' in spec '{spec}' (known: {', '.join(KNOWN)})")
    if not samples:
        raise VrprobeError(f"dataset '{spec}' is empty")
    if limit is not None:
        samples = stratified_subset(samples, limit, seed)
    if shifts:
        samples = shift_images(samples, shifts, seed)
    if image_ablation is not None:
        samples = ablate_images(samples, image_ablation)
    return Dataset(spec=spec, samples=samples)


def load_benchmark(name: str, rest: str) -> list[Sample]:
    """`vqav2`, `okvqa` or `scienceqa` from `PATH[:SPLIT]` (the part of the spec after `NAME:`), JSON or parquet."""
    path, split = path_and_split(name, rest)
    json_layout = path.is_dir() and next(path.glob(JSON_MARKERS[name]), None) is not None
    if not json_layout and is_parquet_source(path):
        return load_parquet(path, name, split or None)
    return JSON_LOADERS[name](path, split) if split else JSON_LOADERS[name](path)


def path_and_split(name: str, rest: str) -> tuple[Path, str | None]:
    """`PATH[:SPLIT]` (the part of the spec after `NAME:`) → (existing path, SPLIT or None for the loader's default).

    The last `:` starts SPLIT unless what follows it contains a path separator."""
    path_text, sep, split = rest.rpartition(":")
    if not sep or "/" in split or "\\" in split:
        path_text, split = rest, ""
    if not path_text:
        raise UsageError(f"{name} spec is {name}:PATH[:SPLIT] (PATH: the dataset folder or a .parquet file)")
    path = Path(path_text).expanduser()
    if not path.exists():
        raise VrprobeError(f"dataset path not found: {path}")
    return path, split or None


def stratified_subset(samples: list[Sample], n: int, seed: int = 0) -> list[Sample]:
    """A deterministic subset of `n` samples that keeps the question-type mix and spreads over images.

    Each type gets `n × share` samples (largest-remainder rounding); within a type the rows are a seeded shuffle, so
    consecutive rows that share an image are not taken together. The result keeps the original order.
    """
    if n >= len(samples):
        return list(samples)
    by_type: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        by_type[s.question_type].append(i)
    types = sorted(by_type)
    exact = {t: n * len(by_type[t]) / len(samples) for t in types}
    quota = {t: int(exact[t]) for t in types}
    for t in sorted(types, key=lambda t: exact[t] - quota[t], reverse=True)[: n - sum(quota.values())]:
        quota[t] += 1
    rng = random.Random(seed)
    chosen: list[int] = []
    for t in types:
        idx = list(by_type[t])
        rng.shuffle(idx)
        chosen.extend(idx[: quota[t]])
    return [samples[i] for i in sorted(chosen)]


def blank_like(image: Image.Image) -> Image.Image:
    """A white RGB image of the same size: the image pathway's input with all content removed."""
    return Image.new("RGB", image.size, (255, 255, 255))


def ablate_images(samples: list[Sample], kind: str) -> list[Sample]:
    """Replace every image by an ablated one (`blank`: white, same size), lazily."""
    if kind not in IMAGE_ABLATIONS:
        raise UsageError(f"unknown image ablation '{kind}' (known: {', '.join(IMAGE_ABLATIONS)})")

    def blank(s: Sample) -> Callable[[], Image.Image]:
        return lambda: blank_like(s.load_image())

    return [replace(s, image_fn=blank(s), meta={**s.meta, "image_ablation": kind}) for s in samples]
