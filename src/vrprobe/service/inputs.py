"""What `POST /v1/answer` accepts, checked: a request body becomes one `Query`, or a `BadRequest` (a 4xx status and
one line saying what is wrong).

Two forms of the same fields:
- JSON (`application/json`): `{"image": BASE64, "question": TEXT, "choices": [TEXT, ...], "attention": BOOL}`; the
  image as base64 (standard alphabet, padding kept; a `data:image/...;base64,` prefix is allowed);
- multipart (`multipart/form-data`): the image as a file part named `image`, text fields `question`, `choices`
  (repeat the field once per choice, or give one JSON array) and `attention` (`true`/`false`, `1`/`0`).

`question` is required and not blank; `choices` is optional (absent: open-ended, the model generates its answer) and,
when given, a non-empty list of non-blank strings (closed set: the model picks one); `attention` defaults to false.

Statuses: 400 a body that is empty, not JSON or not valid multipart; 413 a body or image over the size limit (or an
image over PIL's pixel limit); 415 image bytes that are not an image PIL can read; 422 a well-formed body whose
fields are missing, of the wrong type, blank or unknown.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

#: the fields a request may hold
FIELDS = ("image", "question", "choices", "attention")
#: bytes a request body may hold beyond its image (base64 overhead aside): the question, choices and framing
EXTRA_BYTES = 64 * 1024


class BadRequest(Exception):
    """A request the service refuses: `status` (4xx) and a one-line `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, " ".join(message.split())


@dataclass(frozen=True)
class Query:
    """One checked request: an RGB image, the question, the candidate answers (None: open-ended), and whether the
    answer's attention map is wanted."""

    image: Image.Image
    question: str
    choices: tuple[str, ...] | None
    attention: bool


def body_limit(max_image_bytes: int) -> int:
    """The most bytes a request body may hold: an image of `max_image_bytes` in base64 (4 bytes per 3) plus
    `EXTRA_BYTES`."""
    return 4 * ((max_image_bytes + 2) // 3) + EXTRA_BYTES


def too_large(what: str, size: int | str, max_image_bytes: int, limit: int | None = None) -> BadRequest:
    """The 413 for an image over `max_image_bytes`, or a body over `limit` (`body_limit`)."""
    if limit is None:
        return BadRequest(413, f"{what} is {size} bytes, over the limit (--max-image-bytes {max_image_bytes})")
    return BadRequest(
        413, f"{what} is {size} bytes, over the {limit} that an image of --max-image-bytes {max_image_bytes} needs"
    )


def decode_image(data: bytes, max_image_bytes: int) -> Image.Image:
    """The image in `data` (any format PIL reads), fully decoded and converted to RGB; 413 over `max_image_bytes`
    or PIL's pixel limit, 415 when it is not an image."""
    if not data:
        raise BadRequest(422, "the image is empty")
    if len(data) > max_image_bytes:
        raise too_large("the image", len(data), max_image_bytes)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise BadRequest(413, f"the image has too many pixels: {exc}") from None
    except UnidentifiedImageError:
        raise BadRequest(415, "the image is not in a format PIL reads (PNG, JPEG, ...)") from None
    except Exception as exc:  # a known format, broken: PIL raises OSError, SyntaxError, ValueError, ...
        raise BadRequest(415, f"the image cannot be decoded: {exc}") from None


def from_base64(text: Any, max_image_bytes: int) -> Image.Image:
    """A JSON request's `image`: base64 text (a `data:...;base64,` prefix allowed) → the decoded image."""
    if not isinstance(text, str):
        raise BadRequest(422, f"'image' must be a base64 string, got {_kind(text)}")
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    text = "".join(text.split())  # line breaks are common in base64 output
    if len(text) > body_limit(max_image_bytes):
        raise too_large("the image's base64 text", len(text), max_image_bytes, body_limit(max_image_bytes))
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(422, f"'image' is not valid base64: {exc}") from None
    return decode_image(data, max_image_bytes)


def from_json(body: bytes, max_image_bytes: int) -> Query:
    """A JSON request body → a `Query` (module docstring)."""
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(400, f"the request body is not JSON ({exc}); send JSON or multipart/form-data") from None
    if not isinstance(value, dict):
        raise BadRequest(422, f"the JSON body must be an object with 'image' and 'question', got {_kind(value)}")
    _known(value)
    for name in ("image", "question"):
        if name not in value:
            raise BadRequest(422, f"the JSON body has no '{name}' (required: image, question)")
    question = _question(value["question"])
    choices = _choices(value.get("choices"))
    attention = value.get("attention", False)
    if not isinstance(attention, bool):
        raise BadRequest(422, f"'attention' must be true or false, got {_kind(attention)}")
    return Query(from_base64(value["image"], max_image_bytes), question, choices, attention)


def from_form(fields: dict[str, list[str]], files: dict[str, list[bytes]], max_image_bytes: int) -> Query:
    """A multipart request's text `fields` and uploaded `files` (each by part name) → a `Query`."""
    _known({**fields, **files})
    if "image" not in files:
        where = " (it came as a text field)" if "image" in fields else ""
        raise BadRequest(422, f"the multipart request has no image file: upload it as a file part named 'image'{where}")
    counts = {name: len(parts) for name, parts in fields.items()} | {name: len(parts) for name, parts in files.items()}
    for name, count in counts.items():
        if count > 1 and name != "choices":
            raise BadRequest(422, f"the multipart request has {count} '{name}' parts; give one")
    if "question" not in fields:
        raise BadRequest(422, "the multipart request has no 'question' field")
    question = _question(fields["question"][0])
    choices: Any = fields.get("choices")
    if choices is not None and len(choices) == 1 and choices[0].lstrip().startswith("["):
        try:
            choices = json.loads(choices[0])
        except json.JSONDecodeError as exc:
            raise BadRequest(422, f"'choices' looks like a JSON array but is not one: {exc}") from None
    attention = _flag(fields.get("attention", ["false"])[0])
    return Query(decode_image(files["image"][0], max_image_bytes), question, _choices(choices), attention)


def _known(value: dict[str, Any]) -> None:
    unknown = sorted(set(value) - set(FIELDS))
    if unknown:
        raise BadRequest(422, f"unknown field(s) {', '.join(map(repr, unknown))}; the fields are {', '.join(FIELDS)}")


def _question(value: Any) -> str:
    if not isinstance(value, str):
        raise BadRequest(422, f"'question' must be a string, got {_kind(value)}")
    if not value.strip():
        raise BadRequest(422, "'question' is empty")
    return value


def _choices(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise BadRequest(422, f"'choices' must be a list of strings, got {_kind(value)}")
    if not value:
        raise BadRequest(422, "'choices' is an empty list: give at least one candidate, or leave it out (open-ended)")
    for choice in value:
        if not isinstance(choice, str):
            raise BadRequest(422, f"'choices' must be a list of strings, but holds {_kind(choice)}")
        if not choice.strip():
            raise BadRequest(422, "'choices' holds an empty string")
    return tuple(value)


def _flag(text: str) -> bool:
    words = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}
    if text.strip().lower() not in words:
        raise BadRequest(422, f"'attention' must be true or false, got {text!r}")
    return words[text.strip().lower()]


def _kind(value: Any) -> str:
    """How a JSON value is named in a message: its JSON type."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    if type(value) in names:
        return names[type(value)]
    return "a number" if isinstance(value, int | float) else type(value).__name__
