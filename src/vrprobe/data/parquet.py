"""VQA v2, OK-VQA and ScienceQA from local parquet files shaped like the lmms-lab Hugging Face exports.

Files are read with `datasets.load_dataset("parquet", data_files=[...], split="train")` from local paths only (the
packaged parquet builder: no Hub access; the usual Arrow cache under `HF_DATASETS_CACHE` is written once).

Which files: PATH is either one `.parquet` file (no split allowed) or a folder searched recursively for `*.parquet`.
In a folder, SPLIT keeps the files named `{SPLIT}.parquet` or `{SPLIT}-*.parquet` (the Hub's
`validation-00000-of-00068.parquet` naming) and the files inside a sub-folder named SPLIT; without SPLIT every file is
used, provided they all carry the same split prefix (the part of the name before the first `-`).

Columns:
- VQA v2 / OK-VQA: `question_id`, `question`, `answers` (strings, or dicts with `answer`), `image` (`{"bytes", "path"}`
  or raw bytes), optional `image_id`, `answer_type`, `question_type`, `multiple_choice_answer`.
- ScienceQA (e.g. `ScienceQA-IMG`): `question`, `choices`, `answer` (index), `image` (may be null), `hint`, `subject`,
  `grade`, optional `pid` (else the id is `{file stem}-{row in file}`).

Samples have the JSON loaders' shape (`vrprobe.data.vqa`, `vrprobe.data.scienceqa`) with `image_path=None`; images are
decoded lazily from the stored bytes by `image_fn` (RGB). A VQA row without image bytes raises at load time; a corrupt
image raises `VrprobeError` naming its file and row when it is loaded.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from vrprobe.data.sample import Sample
from vrprobe.data.scienceqa import scienceqa_sample
from vrprobe.data.vqa import most_common_answer, vqa_sample
from vrprobe.errors import VrprobeError

KINDS = ("vqav2", "okvqa", "scienceqa")
REQUIRED = {
    "vqav2": ("question_id", "question", "answers", "image"),
    "okvqa": ("question_id", "question", "answers", "image"),
    "scienceqa": ("question", "choices", "answer", "image"),
}


def is_parquet_source(path: Path) -> bool:
    """True for a `.parquet` file or a folder holding `.parquet` files at any depth."""
    path = Path(path)
    if path.is_file():
        return path.suffix == ".parquet"
    return path.is_dir() and next(path.rglob("*.parquet"), None) is not None


def file_split(f: Path) -> str:
    """The split a parquet file belongs to by its name: the part before the first `-` (`validation-00000-of-…`)."""
    return f.stem.split("-", 1)[0]


def parquet_files(path: Path, split: str | None = None) -> list[Path]:
    """The parquet files PATH and SPLIT select (see the module docstring), sorted; raises `VrprobeError` if none."""
    path = Path(path)
    if path.is_file():
        if split is not None:
            raise VrprobeError(f"{path} is a single parquet file; drop the split ':{split}' from the spec")
        return [path]
    if not path.is_dir():
        raise VrprobeError(f"dataset path not found: {path}")
    files = sorted(f for f in path.rglob("*.parquet") if f.is_file())
    splits = sorted({file_split(f) for f in files})
    if split is None:
        if len(splits) > 1:
            raise VrprobeError(f"{path} holds parquet files of splits {', '.join(splits)}; add ':SPLIT' to the spec")
        chosen = files
    else:
        chosen = [f for f in files if file_split(f) == split or split in f.relative_to(path).parts[:-1]]
    if not chosen:
        raise VrprobeError(f"no parquet files for split '{split}' under {path} (splits: {', '.join(splits) or 'none'})")
    return chosen


def row_locator(files: Sequence[Path]) -> Callable[[int], tuple[Path, int]]:
    """A function from a global row index to (file, row within that file), from the files' footers."""
    import pyarrow.parquet as pq

    starts: list[tuple[int, Path]] = []
    total = 0
    for f in files:
        try:
            n = pq.ParquetFile(f).metadata.num_rows
        except Exception as exc:  # pyarrow raises several types for a corrupt footer
            raise VrprobeError(f"cannot read parquet file {f}: {type(exc).__name__}") from None
        starts.append((total, f))
        total += n

    def locate(i: int) -> tuple[Path, int]:
        start, f = next(s for s in reversed(starts) if s[0] <= i)
        return f, i - start

    return locate


def open_parquet(files: Sequence[Path]) -> Any:
    """The files as one `datasets.Dataset` (local `data_files`, split "train"), image column left undecoded."""
    import datasets

    try:
        ds = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    except Exception as exc:  # the builder raises many types for unreadable or mismatched files
        raise VrprobeError(
            f"cannot read parquet files {files[0]}…: {type(exc).__name__}: {exc}".split("\n")[0]
        ) from None
    if "image" in ds.column_names and isinstance(ds.features["image"], datasets.Image):
        ds = ds.cast_column("image", datasets.Image(decode=False))
    return ds


def image_bytes(value: Any) -> bytes | None:
    """The encoded image in an `image` cell: `{"bytes": ...}` or raw bytes; None when absent."""
    data = value.get("bytes") if isinstance(value, dict) else value
    return bytes(data) if data else None


def decode_image(data: bytes | None, where: str) -> Image.Image:
    """Encoded image bytes → RGB `PIL.Image`, or `VrprobeError` naming `where` (file and row)."""
    if not data:
        raise VrprobeError(f"no image bytes in {where}")
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")
    except Exception as exc:  # PIL raises several types for corrupt data
        raise VrprobeError(f"cannot read image of {where}: {type(exc).__name__}") from None


def has_image(ds: Any) -> list[bool]:
    """Per row, whether the `image` cell holds bytes (read from the Arrow column, no decoding)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = ds.data.column("image")
    if pa.types.is_null(col.type):  # every cell null
        return [False] * len(col)
    if pa.types.is_struct(col.type):
        col = pc.struct_field(col, "bytes")
    return [bool(v) for v in pc.and_(pc.is_valid(col), pc.greater(pc.binary_length(col), 0)).fill_null(False)]


@dataclass(frozen=True)
class ImageRows:
    """The rows of an opened parquet dataset with its `image` column held apart (decoded only when a sample's image is
    loaded): `present[i]` says whether row i has image bytes, `col(name)` gives a column's values (None for every row
    when the column is absent), `where(i)` names row i's file and row, `loader(i)` is row i's `image_fn`."""

    present: list[bool]
    locate: Callable[[int], tuple[Path, int]]
    images: Any
    columns: dict[str, list[Any]]

    @classmethod
    def read(cls, ds: Any, files: Sequence[Path]) -> ImageRows:
        return cls(
            has_image(ds), row_locator(files), ds.select_columns(["image"]), ds.remove_columns(["image"]).to_dict()
        )

    def col(self, name: str) -> list[Any]:
        return self.columns.get(name, [None] * len(self.present))

    def where(self, i: int) -> str:
        f, r = self.locate(i)
        return f"{f} row {r}"

    def loader(self, i: int) -> Callable[[], Image.Image]:
        return lambda: decode_image(image_bytes(self.images[i]["image"]), self.where(i))


def load_parquet(path: Path, kind: str, split: str | None = None, images_only: bool = True) -> list[Sample]:
    """Samples of benchmark `kind` ("vqav2", "okvqa" or "scienceqa") from the parquet files PATH/SPLIT select.

    `images_only` applies to ScienceQA: rows with a null image are skipped (otherwise kept with no image).
    """
    if kind not in KINDS:
        raise VrprobeError(f"unknown parquet benchmark '{kind}' (known: {', '.join(KINDS)})")
    files = parquet_files(path, split)
    ds = open_parquet(files)
    missing = [c for c in REQUIRED[kind] if c not in ds.column_names]
    if missing:
        raise VrprobeError(f"{files[0]}: missing column(s) {', '.join(missing)} for {kind}")
    table = ImageRows.read(ds, files)
    samples = []
    if kind == "scienceqa":
        columns = ("pid", "question", "choices", "answer", "hint", "subject", "grade")
        for i, (pid, q, options, answer, hint, subject, grade) in enumerate(zip(*map(table.col, columns), strict=True)):
            if not table.present[i] and images_only:
                continue
            f, r = table.locate(i)
            samples.append(
                scienceqa_sample(
                    sample_id=str(pid) if pid is not None else f"{f.stem}-{r}",
                    question=str(q),
                    options=list(options or []),
                    answer=answer,
                    hint=str(hint or ""),
                    subject=str(subject or ""),
                    grade=str(grade or ""),
                    image_fn=table.loader(i) if table.present[i] else None,
                    where=table.where(i),
                )
            )
        return samples
    columns = (
        "question_id",
        "question",
        "answers",
        "answer_type",
        "question_type",
        "multiple_choice_answer",
        "image_id",
    )
    for i, (qid, q, raw, answer_type, qtype, mc, image_id) in enumerate(zip(*map(table.col, columns), strict=True)):
        if not table.present[i]:
            raise VrprobeError(f"no image bytes in {table.where(i)} (question_id {qid})")
        answers = tuple(str(a["answer"] if isinstance(a, dict) else a) for a in raw or [])
        samples.append(
            vqa_sample(
                question_id=qid,
                question=str(q),
                answers=answers,
                answer_type=str(answer_type or "other"),
                vqa_question_type=str(qtype or ""),
                multiple_choice_answer=str(mc or most_common_answer(answers)),
                image_id=image_id,
                image_fn=table.loader(i),
            )
        )
    return samples
