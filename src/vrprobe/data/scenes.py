"""`scenes:SPLIT`: a built-in, seeded, procedural grounding benchmark with exact target boxes (no download).

Each scene is a 128×128 RGB image on a plain pale background holding 2–6 non-overlapping objects, each a shape
(circle, rectangle, triangle), a colour (easy-VQA's eight), a size (small: 16–22 px, large: 30–38 px on the long side)
and a position. Objects are drawn without antialiasing, so an object's box `(x, y, w, h)` is exactly the pixels it
covers, and everything outside the boxes is background. Images are rendered lazily (`Sample.image_fn`) and
deterministically: the same split gives the same bytes.

Questions, in easy-VQA's answer vocabulary so the easy-VQA zoo can attempt them (`meta["question_type"]`):

- `attribute`: "what color is the [small|large] triangle?" (choices: the 8 colours) or "what shape is the
  [small|large] red object?" (choices: the 3 shapes); the object named is the only one in the scene matching it.
- `existence`: "is there a red circle?" (choices: yes, no).
- `count`: "how many circles are there?" / "how many red objects are there?" (choices: "0".."6").
- `spatial`: "what shape is left of | right of | above | below the [small|large] blue rectangle?" (choices: the 3
  shapes). A is left of B when A's box ends where B's begins or before (`A.x + A.w <= B.x`); asked only when A is
  the one object whose centre lies left of B's centre, so the question has one answer however "left" is read.

`answers` = (the answer,); `boxes` = the objects the answer depends on: attribute, the object; existence, every
matching object (`()` for "no"); count, every counted object (`()` for 0); spatial, the answer then the reference.

Splits (`SPLITS`: seed, scenes): `train` 5,000 scenes × 4 = 20,000 questions, `test` 500 × 4 =
2,000 (one question of each kind per scene), `lures` 2,000 × 1 = 2,000 (500 per kind). Scene `j` of a split draws
from its own `random.Random(seed * 1_000_000 + j)`. In `lures` each scene holds a lure: a large object near the
image centre that shares every attribute with the target but the one asked (a large red triangle beside the small
blue one asked about as "what color is the small triangle?"; a large red triangle or a large blue circle when asked
"is there a red circle?"; a large object like the counted ones but for the counted attribute; for spatial questions
an object like the answer but for its shape, on the wrong side of the reference and nearer to it than the answer).
Looking at the lure gives a confident wrong answer, recorded as `meta["lure_answer"]`; its box is in
`meta["lure_boxes"]`. Every sample's `meta["objects"]` lists the scene (shape, color, size, box).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from PIL import Image, ImageDraw

from vrprobe.data.sample import Box, Sample
from vrprobe.errors import VrprobeError

SHAPES = ("circle", "rectangle", "triangle")
COLORS = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "teal": (0, 128, 128),
    "brown": (165, 42, 42),
    "yellow": (255, 255, 0),
}
NAMES = tuple(COLORS)
SIDES = {"small": (16, 22), "large": (30, 38)}
KINDS = ("attribute", "existence", "count", "spatial")
RELATIONS = ("left of", "right of", "above", "below")
COUNTS = tuple(str(n) for n in range(7))
CHOICES = {"color": tuple(COLORS), "shape": SHAPES, "existence": ("yes", "no"), "count": COUNTS}
IMAGE_SIZE = 128
MARGIN = 4  # px between an object and the image edge, at least
GAP = 4  # px between two objects' boxes, at least
CENTRAL = 8  # a lure's centre lies within this many px of the image centre, in x and in y
SPLITS = {"train": (24_101, 5_000), "test": (24_102, 500), "lures": (24_103, 2_000)}  # seed, scenes


@dataclass(frozen=True)
class Obj:
    """One object: its attributes and its box, `x, y` the top-left pixel, `w × h` the pixels it spans."""

    shape: str
    color: str
    size: str
    x: int
    y: int
    w: int
    h: int

    @property
    def box(self) -> Box:
        return (float(self.x), float(self.y), float(self.w), float(self.h))

    def meta(self) -> dict[str, Any]:
        return {"shape": self.shape, "color": self.color, "size": self.size, "box": list(self.box)}


@dataclass(frozen=True)
class Scene:
    """A background colour and the objects on it; `render` draws it (the samples' `image_fn`)."""

    background: tuple[int, int, int]
    objects: tuple[Obj, ...]

    def render(self) -> Image.Image:
        """The scene as a 128×128 RGB image: each object filled, aliased, exactly over its box."""
        image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), self.background)
        draw = ImageDraw.Draw(image)
        for o in self.objects:
            x1, y1, fill = o.x + o.w - 1, o.y + o.h - 1, COLORS[o.color]
            if o.shape == "circle":
                draw.ellipse((o.x, o.y, x1, y1), fill=fill)
            elif o.shape == "rectangle":
                draw.rectangle((o.x, o.y, x1, y1), fill=fill)
            else:  # apex up; a flat 2-px top when the width is even, so the top row is always filled
                draw.polygon([(o.x, y1), (x1, y1), (o.x + o.w // 2, o.y), (o.x + (o.w - 1) // 2, o.y)], fill=fill)
        return image


@dataclass(frozen=True)
class Query:
    """What a question asks. `ref`: the (attribute, value) pairs that pick objects out (attribute: the target;
    existence, count: what is looked for; spatial: the reference object). `asks`: "color" or "shape" (attribute,
    spatial). `relation`: one of `RELATIONS` (spatial)."""

    kind: str
    ref: tuple[tuple[str, str], ...]
    asks: str = ""
    relation: str = ""

    def matches(self, o: Obj) -> bool:
        return all(getattr(o, attr) == value for attr, value in self.ref)

    def text(self) -> str:
        values = dict(self.ref)
        words = [values.get("size", ""), values.get("color", "")]
        noun = " ".join(w for w in [*words, values.get("shape", "object")] if w)
        if self.kind == "attribute":
            return f"what {self.asks} is the {noun}?"
        if self.kind == "existence":
            return f"is there a {noun}?"
        if self.kind == "count":
            return f"how many {noun}s are there?"
        return f"what {self.asks} is {self.relation} the {noun}?"

    def choices(self) -> tuple[str, ...]:
        return CHOICES[self.asks] if self.asks else CHOICES[self.kind]


def evaluate(query: Query, objects: Sequence[Obj]) -> tuple[str, tuple[Obj, ...]] | None:
    """The answer and the objects it depends on, or None when the question has no single answer in this scene."""
    matched = tuple(o for o in objects if query.matches(o))
    if query.kind == "existence":
        return ("yes" if matched else "no"), matched
    if query.kind == "count":
        return str(len(matched)), matched
    if len(matched) != 1:
        return None
    target = matched[0]
    if query.kind == "attribute":
        return getattr(target, query.asks), matched
    answer = only_beside(target, objects, query.relation)
    return None if answer is None else (getattr(answer, query.asks), (answer, target))


def beside(a: Obj, b: Obj, relation: str, *, centre: bool) -> bool:
    """Is `a` `relation` `b`? By the boxes' centres (`centre=True`), or with `a`'s box wholly on that side of `b`'s."""
    horizontal = relation in ("left of", "right of")
    a0, a1, b0, b1 = (a.x, a.x + a.w, b.x, b.x + b.w) if horizontal else (a.y, a.y + a.h, b.y, b.y + b.h)
    if relation in ("left of", "above"):
        return a0 + a1 < b0 + b1 if centre else a1 <= b0
    return a0 + a1 > b0 + b1 if centre else a0 >= b1


# an object to place: (shape, color, size, central)
Spec = tuple[str, str, str, bool]


def place(rng: random.Random, specs: Sequence[Spec], tries: int = 40) -> list[Obj] | None:
    """Draw each spec's size and position in turn, `GAP` px apart from those placed before (horizontally or
    vertically); None if one does not fit in `tries` draws."""
    boxes: list[tuple[int, int, int, int]] = []  # x0, y0, x1 + GAP, y1 + GAP (x1, y1 exclusive)
    objects: list[Obj] = []
    for shape, color, size, central in specs:
        w = h = between(rng, *SIDES[size])
        if shape == "rectangle":  # the short side 65–100% of the long one, either way round
            short = round(w * (0.65 + 0.35 * rng.random()))
            w, h = (w, short) if rng.random() < 0.5 else (short, w)
        for _ in range(tries):
            if central:
                x = (IMAGE_SIZE - w) // 2 + between(rng, -CENTRAL, CENTRAL)
                y = (IMAGE_SIZE - h) // 2 + between(rng, -CENTRAL, CENTRAL)
            else:
                x = between(rng, MARGIN, IMAGE_SIZE - MARGIN - w)
                y = between(rng, MARGIN, IMAGE_SIZE - MARGIN - h)
            xe, ye = x + w + GAP, y + h + GAP
            if all(xe <= x0 or x1 <= x or ye <= y0 or y1 <= y for x0, y0, x1, y1 in boxes):
                boxes.append((x, y, xe, ye))
                objects.append(Obj(shape, color, size, x, y, w, h))
                break
        else:
            return None
    return objects


def between(rng: random.Random, low: int, high: int) -> int:
    """An integer in `low..high`, both included (one `random()` draw: cheaper than `randint`)."""
    return low + int(rng.random() * (high - low + 1))


def pick(rng: random.Random, values: Sequence[str], *exclude: str) -> str:
    """A random one of `values`, leaving out `exclude`."""
    kept = [v for v in values if v not in exclude] if exclude else values
    return kept[int(rng.random() * len(kept))]


def any_spec(rng: random.Random) -> Spec:
    """A random non-central object: any shape and colour, large with probability 0.4."""
    return (pick(rng, SHAPES), pick(rng, NAMES), "large" if rng.random() < 0.4 else "small", False)


# ---- train / test: a random scene built around a count, one question of each kind -------------------------------


def plain_scene(rng: random.Random, j: int) -> tuple[Scene, list[Query]] | None:
    """One attempt at scene `j` of train/test: `j % 7` objects of a counted kind among 2–6, then four questions."""
    count, by_shape = j % 7, rng.random() < 0.5
    value = pick(rng, SHAPES if by_shape else NAMES)
    n = between(rng, max(2, count), 6)
    specs: list[Spec] = []
    for i in range(n):
        shape = value if by_shape and i < count else pick(rng, SHAPES, *([value] if by_shape else []))
        color = value if not by_shape and i < count else pick(rng, NAMES, *([] if by_shape else [value]))
        specs.append((shape, color, "large" if rng.random() < 0.4 else "small", False))
    rng.shuffle(specs)
    specs.sort(key=lambda spec: spec[2] != "large")  # large ones first: fewer layouts that do not fit
    objects = place(rng, specs)
    spatial = None if objects is None else spatial_query(rng, objects)
    attribute = None if objects is None or spatial is None else attribute_query(rng, objects)
    if objects is None or spatial is None or attribute is None:
        return None
    existence = existence_query(rng, objects, yes=j % 2 == 0)
    count_query = Query("count", (("shape" if by_shape else "color", value),))
    return Scene(background(rng), tuple(objects)), [attribute, existence, count_query, spatial]


def background(rng: random.Random) -> tuple[int, int, int]:
    """A pale colour, each channel in 215..255: far from every object colour."""
    return (between(rng, 215, 255), between(rng, 215, 255), between(rng, 215, 255))


def attribute_query(rng: random.Random, objects: Sequence[Obj]) -> Query | None:
    """Colour or shape (a coin) of a random object named by the other attribute, with its size when needed."""
    first = rng.choice(("color", "shape"))
    for asks in (first, "shape" if first == "color" else "color"):
        by = "shape" if asks == "color" else "color"
        options = [Query("attribute", ref, asks) for ref in namings(objects, ((by,), ("size", by))) if ref]
        if options:
            return rng.choice(options)
    return None


def namings(objects: Sequence[Obj], forms: Sequence[tuple[str, ...]]) -> list[tuple[tuple[str, str], ...]]:
    """For each object, the first of `forms` (tuples of attribute names) whose values name it alone among
    `objects`, as a `Query.ref`; `()` when none does."""
    keyed = [
        [tuple(attrgetter(*form)(o)) if len(form) > 1 else (getattr(o, form[0]),) for o in objects] for form in forms
    ]
    counts = [Counter(keys) for keys in keyed]
    refs: list[tuple[tuple[str, str], ...]] = []
    for i in range(len(objects)):
        f = next((f for f in range(len(forms)) if counts[f][keyed[f][i]] == 1), None)
        refs.append(() if f is None else tuple(zip(forms[f], keyed[f][i], strict=True)))
    return refs


def existence_query(rng: random.Random, objects: Sequence[Obj], *, yes: bool) -> Query:
    """ "Is there a C S?" for a random object's colour and shape (yes), or with one of them changed (no)."""
    o = rng.choice(objects)
    if yes:
        return Query("existence", (("color", o.color), ("shape", o.shape)))
    present = {(p.color, p.shape) for p in objects}
    near = [(c, o.shape) for c in COLORS if c != o.color] + [(o.color, s) for s in SHAPES if s != o.shape]
    absent = [pair for pair in near if pair not in present] or [
        (c, s) for c in COLORS for s in SHAPES if (c, s) not in present
    ]
    color, shape = rng.choice(absent)
    return Query("existence", (("color", color), ("shape", shape)))


def spatial_query(rng: random.Random, objects: Sequence[Obj]) -> Query | None:
    """A random (reference, relation) whose question has one answer; the reference named by colour and shape (and
    size when needed)."""
    refs = namings(objects, (("color", "shape"), ("size", "color", "shape")))
    options = [
        Query("spatial", ref, "shape", relation)
        for relation in RELATIONS
        for o, ref in zip(objects, refs, strict=True)
        if ref and only_beside(o, objects, relation) is not None
    ]
    return rng.choice(options) if options else None


def only_beside(ref: Obj, objects: Sequence[Obj], relation: str) -> Obj | None:
    """The one object whose centre lies `relation` `ref`'s, if its box lies wholly on that side; else None."""
    found = None
    for o in objects:
        if o is not ref and beside(o, ref, relation, centre=True):
            if found is not None:
                return None
            found = o
    return found if found is not None and beside(found, ref, relation, centre=False) else None


# ---- lures: one question per scene, built around the target and its lure ----------------------------------------


def lure_scene(rng: random.Random, j: int) -> tuple[Scene, Query, Obj, str] | None:
    """One attempt at lures scene `j`: kind `KINDS[j % 4]`, the variant cycling with `j // 4` (exact balance). The
    lure is `objects[0]`; the target (if any) small, the lure large and central."""
    kind, turn = KINDS[j % 4], j // 4
    shape, color = pick(rng, SHAPES), pick(rng, NAMES)
    target = (shape, color, "small", False)
    if kind == "attribute":  # "what color is the small triangle?" beside a large triangle of another colour
        asks = ("color", "shape")[turn % 2]
        by, value = ("shape", shape) if asks == "color" else ("color", color)
        query = Query("attribute", (("size", "small"), (by, value)), asks)
        specs = [lure_like(rng, shape, color, asks), target] + extras(rng, 0, 3, by, value)
    elif kind == "existence":  # "is there a red circle?" beside a large red triangle or a large blue circle
        query = Query("existence", (("color", color), ("shape", shape)))
        specs = [lure_like(rng, shape, color, pick(rng, ("shape", "color"))), *([target] if turn % 2 == 0 else [])]
        specs += extras(rng, 1, 3, "color shape", f"{color} {shape}")
    elif kind == "count":  # "how many circles are there?" beside a large non-circle like them
        count, attr = turn % 6, ("shape", "color")[(turn // 6) % 2]
        query = Query("count", ((attr, shape if attr == "shape" else color),))
        specs = [lure_like(rng, shape, color, attr)] + [target] * count
        specs += extras(rng, max(0, 1 - count), 5 - count, attr, query.ref[0][1])
    else:  # "what shape is left of the X?" with a large object like the answer but for its shape, nearer to X
        reference = any_spec(rng)
        query = Query("spatial", (("color", reference[1]), ("shape", reference[0])), "shape", RELATIONS[turn % 4])
        specs = [lure_like(rng, shape, color, "shape"), reference, (shape, color, "large", False)]
        specs += extras(rng, 0, 2, "color shape", f"{reference[1]} {reference[0]}")
    objects = place(rng, specs)
    found = None if objects is None else evaluate(query, objects)
    if objects is None or found is None or not lure_ok(query, objects, found[1]):
        return None
    return Scene(background(rng), tuple(objects)), query, objects[0], lure_answer(query, objects[0], found[0])


def lure_like(rng: random.Random, shape: str, color: str, differ: str) -> Spec:
    """A large, central object with the given shape and colour but for `differ` ("shape" or "color")."""
    if differ == "shape":
        return (pick(rng, SHAPES, shape), color, "large", True)
    return (shape, pick(rng, NAMES, color), "large", True)


def extras(rng: random.Random, low: int, high: int, attrs: str, avoid: str) -> list[Spec]:
    """`low..high` random distractors whose `attrs` ("shape", "color" or "color shape") are not `avoid`."""
    specs: list[Spec] = []
    for _ in range(between(rng, low, high)):
        spec = any_spec(rng)
        while " ".join(spec[1] if a == "color" else spec[0] for a in attrs.split()) == avoid:
            spec = any_spec(rng)
        specs.append(spec)
    return specs


def lure_ok(query: Query, objects: Sequence[Obj], targets: tuple[Obj, ...]) -> bool:
    """The lure (`objects[0]`) is not a target; for spatial questions the answer is the object drawn for it
    (`objects[2]`, like the lure but for its shape) and the lure lies nearer the reference than the answer does."""
    lure = objects[0]
    if lure in targets:
        return False
    if query.kind != "spatial":
        return True
    answer, ref = targets
    return answer == objects[2] and distance(lure, ref) < distance(answer, ref)


def distance(a: Obj, b: Obj) -> float:
    """Between the boxes' centres, in pixels."""
    return math.dist((a.x + a.w / 2, a.y + a.h / 2), (b.x + b.w / 2, b.y + b.h / 2))


def lure_answer(query: Query, lure: Obj, answer: str) -> str:
    """The answer one gets by taking the lure for the target."""
    if query.kind in ("attribute", "spatial"):
        return str(getattr(lure, query.asks))
    if query.kind == "existence":
        return "no" if answer == "yes" else "yes"
    return str(int(answer) + 1)


# ---- the split --------------------------------------------------------------------------------------------------


def scenes(split: str) -> Iterator[tuple[Scene, list[Query], dict[str, Any]]]:
    """Each scene of the split with its questions and the scene's extra meta (the lure), in order."""
    seed, n_scenes = SPLITS[split]
    for j in range(n_scenes):
        rng = random.Random(seed * 1_000_000 + j)
        for _ in range(1000):
            if split == "lures":
                made = lure_scene(rng, j)
                if made is not None:
                    scene, query, lure, wrong = made
                    yield scene, [query], {"lure": lure.meta(), "lure_boxes": [list(lure.box)], "lure_answer": wrong}
                    break
            else:
                plain = plain_scene(rng, j)
                if plain is not None:
                    yield plain[0], plain[1], {}
                    break
        else:  # pragma: no cover - the generator is deterministic; tests load every split
            raise VrprobeError(f"scenes:{split}: could not build scene {j}")


def load_scenes(split: str) -> list[Sample]:
    """All questions of one split, in order; ids `scenes-{split}-{index:06d}`; images rendered on demand."""
    if split not in SPLITS:
        raise VrprobeError(f"scenes has splits {', '.join(SPLITS)}; got '{split}'")
    samples: list[Sample] = []
    for j, (scene, queries, extra) in enumerate(scenes(split)):
        objects = [o.meta() for o in scene.objects]
        for query in queries:
            found = evaluate(query, scene.objects)
            assert found is not None  # every query was kept only when it had one answer
            answer, targets = found
            meta = {"question_type": query.kind, "image_id": j, "objects": objects, **extra}
            if query.asks:
                meta["asks"] = query.asks
            if query.relation:
                meta["relation"] = query.relation
            samples.append(
                Sample(
                    id=f"scenes-{split}-{len(samples):06d}",
                    question=query.text(),
                    answers=(answer,),
                    choices=query.choices(),
                    meta=meta,
                    boxes=tuple(o.box for o in targets),
                    image_fn=scene.render,
                )
            )
    return samples
