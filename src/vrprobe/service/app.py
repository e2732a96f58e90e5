"""The HTTP app: `create_app(scorer, max_batch, max_wait_ms, max_image_bytes)`, a FastAPI app around one `Scorer`.

Routes:
- `POST /v1/answer`: a question about an image (JSON or multipart, `vrprobe.service.inputs`) → `{"answer",
  "confidence", "reliability", "model"}` and, when the request sets `attention`, `"attention"` (see `Answer`);
- `GET /healthz`: `{"status": "ok", ...}` with the model, the probe and what the batcher has served (`Health`);
- `GET /docs` (Swagger UI) and `GET /openapi.json`: the API described, both request forms included.

Concurrent requests are answered together (`vrprobe.service.batcher`): up to `max_batch` per model batch, the first
waiting at most `max_wait_ms` for company. Every refusal is a 4xx with the body `{"error": "<one line>"}`, and the
server goes on serving; an error inside the model is a 500 with the same body. The app holds no state beyond the
scorer and the batcher's counters, and writes no files.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from importlib.metadata import version
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.types import Message

from vrprobe.analyses.scorer import DEFINITIONS, Scorer
from vrprobe.errors import UsageError
from vrprobe.service.batcher import MicroBatcher
from vrprobe.service.inputs import BadRequest, Query, body_limit, from_form, from_json, too_large

MIB = 1024 * 1024


class AnswerRequest(BaseModel):
    """The JSON form of a request (multipart carries the same fields, the image as a file part)."""

    image: str = Field(description="The image (PNG, JPEG, ... any format PIL reads), base64-encoded.")
    question: str = Field(description="The question about the image; not blank.")
    choices: list[str] | None = Field(
        None, description="Candidate answers (closed set: the model picks one); absent: open-ended, it generates."
    )
    attention: bool = Field(False, description="Also return the answer's attention map over the image.")


class Answer(BaseModel):
    """The answer to one request and how far to trust it."""

    answer: str = Field(description="The model's answer: the chosen candidate, or the generated text.")
    confidence: float = Field(description=DEFINITIONS["confidence"])
    reliability: float = Field(description=DEFINITIONS["reliability"])
    model: str = Field(description="The model that answered, as `vrprobe serve --model` named it.")
    attention: list[list[float]] | None = Field(
        None,
        description="Only when the request asks: the answer position's attention over the image, averaged over "
        "layers and heads and renormalised over the image tokens (sums to 1), as rows × cols of the image token "
        "grid, row-major from the top left; absent for a model whose image tokens form no single grid.",
    )


class Health(BaseModel):
    """What `/healthz` reports."""

    status: str = Field(description="'ok' while the server answers.")
    model: str
    probe: str
    probe_layer: int = Field(description="The model layer whose hidden state the probe reads.")
    max_batch: int
    max_wait_ms: float
    max_image_bytes: int
    requests: int = Field(description="Requests answered by the model so far (refused ones are not counted).")
    batches: int = Field(description="Model batches run so far.")
    max_batch_seen: int = Field(description="The largest batch run so far.")
    mean_batch: float = Field(description="requests / batches (0 before the first).")
    batch_sizes: dict[str, int] = Field(description="How many batches had each size.")
    failed_batches: int = Field(description="Batches that failed and were rerun one request at a time.")
    queued: int = Field(description="Requests waiting for the model now.")


class Error(BaseModel):
    """A refusal or a failure."""

    error: str = Field(description="What went wrong, in one line.")


def answer_batch(scorer: Scorer, model: str, queries: Sequence[Query]) -> list[dict[str, Any]]:
    """The responses to `queries`, in order, from the scorer: the closed-set queries in one forward and the
    open-ended ones in another (the scorer batches runs of one kind), each as `Answer`'s fields."""
    order = sorted(range(len(queries)), key=lambda i: queries[i].choices is None)
    records = scorer(
        [queries[i].image for i in order],
        [queries[i].question for i in order],
        [queries[i].choices for i in order],
        attention=any(q.attention for q in queries),
    )
    out: dict[int, dict[str, Any]] = {}
    for i, r in zip(order, records, strict=True):
        response = {"answer": r["predicted"], "confidence": r["confidence"], "reliability": r["reliability"]}
        out[i] = {**response, "model": model} | ({"attention": r["attention"]} if queries[i].attention else {})
    return [out[i] for i in range(len(queries))]


def create_app(
    scorer: Scorer,
    max_batch: int = 16,
    max_wait_ms: float = 10.0,
    max_image_bytes: int = 10 * MIB,
    *,
    model: str | None = None,
    probe: str | None = None,
) -> FastAPI:
    """The app serving `scorer` (module docstring). `model`: the name answers carry (default the adapter's);
    `probe`: the probe's directory as `/healthz` shows it (default the scorer's)."""
    name = model or scorer.adapter.name
    scorer.batch_size = max(scorer.batch_size, max_batch)  # one batcher batch = at most one forward per kind
    batcher: MicroBatcher[Query, dict[str, Any]] = MicroBatcher(
        partial(answer_batch, scorer, name), max_batch, max_wait_ms
    )
    limit = body_limit(max_image_bytes)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(
        title="vrprobe",
        version=version("vrprobe"),
        summary=f"{name}'s answers to questions about images, each with the model's confidence and the "
        "reliability a saved probe gives it.",
        lifespan=lifespan,
    )
    app.state.batcher = batcher

    @app.exception_handler(BadRequest)
    async def refused(_: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": one_line(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return JSONResponse({"error": one_line(f"{where}: {first.get('msg', 'invalid request')}")}, status_code=422)

    @app.get("/healthz", response_model=Health, summary="Whether the server answers, and what it has served")
    async def healthz() -> dict[str, Any]:
        facts = {"status": "ok", "model": name, "probe": probe or str(scorer.probe.path)}
        facts |= {"probe_layer": scorer.probe.layer, "max_batch": max_batch, "max_wait_ms": max_wait_ms}
        return {**facts, "max_image_bytes": max_image_bytes, **batcher.stats()}

    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": Error, "description": text}
        for code, text in {
            400: "The body is empty, not JSON, or not valid multipart.",
            413: "The body or the image is over --max-image-bytes.",
            415: "The image bytes are not an image.",
            422: "A field is missing, blank, of the wrong type, or unknown.",
            500: "The model failed on this request.",
        }.items()
    }
    form_schema = {
        "type": "object",
        "required": ["image", "question"],
        "properties": {
            "image": {"type": "string", "format": "binary", "description": "The image file."},
            "question": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "string"}, "description": "One field per choice."},
            "attention": {"type": "boolean", "default": False},
        },
    }
    body_docs = {
        "required": True,
        "content": {
            "application/json": {"schema": AnswerRequest.model_json_schema()},
            "multipart/form-data": {"schema": form_schema},
        },
    }

    @app.post(
        "/v1/answer",
        response_model=Answer,
        response_model_exclude_none=True,
        responses=errors,
        summary="Answer a question about an image, with its confidence and reliability",
        openapi_extra={"requestBody": body_docs},
    )
    async def answer(request: Request) -> dict[str, Any]:
        query = await read_query(request, limit, max_image_bytes)
        try:
            response = await batcher.submit(query)
        except UsageError as exc:
            raise BadRequest(422, str(exc)) from None
        except Exception as exc:  # the model failed on this request (the batcher reran its batch one by one)
            raise HTTPException(500, f"the model failed: {exc}") from None
        return response

    return app


async def read_query(request: Request, limit: int, max_image_bytes: int) -> Query:
    """The request's body (refused past `limit` bytes, before reading it where the client declares its length),
    parsed by its content type: multipart, else JSON."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large("the request body", declared, max_image_bytes, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large("the request body", f"at least {size}", max_image_bytes, limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise BadRequest(
            400, 'the request body is empty: send JSON {"image": BASE64, "question": TEXT} or multipart/form-data'
        )
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        fields, files = await read_form(request, body, limit)
        return await asyncio.to_thread(from_form, fields, files, max_image_bytes)
    return await asyncio.to_thread(from_json, body, max_image_bytes)


async def read_form(request: Request, body: bytes, limit: int) -> tuple[dict[str, list[str]], dict[str, list[bytes]]]:
    """A multipart body's text fields and files, each by part name (starlette parses it; 400 when malformed)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=8, max_fields=64, max_part_size=limit)
    fields: dict[str, list[str]] = {}
    files: dict[str, list[bytes]] = {}
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.setdefault(key, []).append(await value.read())
            else:
                fields.setdefault(key, []).append(value)
    finally:
        await form.close()
    return fields, files


def one_line(detail: Any) -> str:
    """`detail` as one line of text."""
    return " ".join(str(detail).split()) or "error"
