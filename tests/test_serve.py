"""`vrprobe serve`: the real server in a subprocess, spoken to over HTTP (stdlib only): answers equal `Scorer`'s,
both request forms, the attention map, batching of concurrent requests, one-line 4xx refusals after which it goes on
serving, the docs; and the refusals before it starts (settings, port in use, another model's probe), the warning for
a non-loopback address."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from vrprobe import Scorer
from vrprobe.data import load_dataset
from vrprobe.registry import load_adapter

from conftest import run_cli
from numerics import FORWARD, SUM, assert_close

MAX_IMAGE_BYTES = 20_000  # the zoo's easy-VQA PNGs are a few kB; a noise PNG of 128 x 128 is ~49 kB
KEYS = {"answer", "confidence", "reliability", "model"}
NUMBERS = ("confidence", "reliability")


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    """A probe trained by `vrprobe probe` on zoo:llava (easy-VQA, 120 samples, layers 2-3), as in test_score."""
    out = tmp_path_factory.mktemp("probe") / "run"
    args = ["--model", "zoo:llava", "--data", "easy-vqa:train", "--eval-data", "easy-vqa:test", "--limit", "120"]
    r = run_cli("probe", *args, "--layers", "2-3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out / "probe"


@pytest.fixture(scope="module")
def server(probe_dir, tmp_path_factory):
    """`vrprobe serve` on a free loopback port (port 0: the start line names it), batching with a 300 ms window so
    that concurrent requests from this test share batches; yields (base URL, path of its stderr log)."""
    logs = tmp_path_factory.mktemp("serve")
    out_path, err_path = logs / "stdout.txt", logs / "stderr.txt"
    args = ["serve", "--model", "zoo:llava", "--probe", str(probe_dir), "--port", "0", "--max-wait-ms", "300"]
    args += ["--max-batch", "16", "--max-image-bytes", str(MAX_IMAGE_BYTES)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from vrprobe.cli import main; main()", *args], stdout=out, stderr=err, env=env
        )
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None:
            assert proc.poll() is None, f"the server exited ({proc.returncode}): {err_path.read_text()}"
            assert time.monotonic() < deadline, "the server did not print its start line in 120 s"
            line = out_path.read_text().strip()
            if line:
                assert line.startswith("serving zoo:llava with probe ") and line.endswith(" (docs at /docs)"), line
                url = line.split(" at ")[1].split()[0]
            else:
                time.sleep(0.2)
        while get(url + "/healthz")[0] != 200:
            assert proc.poll() is None and time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.2)
        yield url, err_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def scorer(probe_dir):
    """The same model and probe, in this process: what the server's answers must equal."""
    return Scorer.load(probe_dir, model=load_adapter("zoo:llava"))


@pytest.fixture(scope="module")
def samples():
    return load_dataset("easy-vqa:test", limit=16, seed=0).samples


# ---- HTTP, stdlib only ---------------------------------------------------------------------------------------------


def request(url: str, body: bytes | None = None, headers: dict | None = None, method: str | None = None):
    """(status, parsed JSON body or text) of one HTTP request; a 4xx/5xx is returned, not raised."""
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, raw, kind = r.status, r.read(), r.headers.get("content-type", "")
    except urllib.error.HTTPError as exc:
        status, raw, kind = exc.code, exc.read(), exc.headers.get("content-type", "")
    return status, (json.loads(raw) if kind.startswith("application/json") else raw.decode())


def get(url: str):
    try:
        return request(url)
    except OSError:  # not listening yet
        return 0, None


def post_json(url: str, payload) -> tuple[int, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return request(url + "/v1/answer", body, {"Content-Type": "application/json"})


def post_chunked(url: str, body: bytes) -> tuple[int, dict]:
    """POST `body` in chunked transfer encoding (no Content-Length: the server learns the size only by reading)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        chunks = (body[i : i + 8192] for i in range(0, len(body), 8192))
        conn.request("POST", "/v1/answer", chunks, {"Content-Type": "application/json"}, encode_chunked=True)
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def multipart(fields: list[tuple[str, str]], files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of text `fields` and file parts `files` ((name, bytes)); returns (body, type)."""
    boundary = "vrprobe-test-boundary-7f3a"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{n}"\r\n\r\n{v}\r\n'.encode() for n, v in fields]
    for name, data in files:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
        parts.append(f"{head}Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post_form(url: str, fields, files) -> tuple[int, dict]:
    body, kind = multipart(fields, files)
    return request(url + "/v1/answer", body, {"Content-Type": kind})


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")  # lossless: the server decodes the very pixels the in-process scorer gets
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def payload(sample, **extra) -> dict:
    return {"image": b64(png(sample.load_image())), "question": sample.text, "choices": list(sample.choices), **extra}


def assert_same(got: list[dict], expected: list[dict]) -> None:
    """Server answers equal in-process ones: the same text; numbers from a float32 forward of other batch shapes
    (FORWARD budget, probabilities: scale 1), the probe and calibrator smooth / monotone on top."""
    assert [g["answer"] for g in got] == [e["predicted"] for e in expected]
    for key in NUMBERS:
        assert_close([g[key] for g in got], [e[key] for e in expected], dtype=np.float32, scale=1.0, ulps=FORWARD)


# ---- the server ----------------------------------------------------------------------------------------------------


def test_json_answers_equal_the_scorer(server, scorer, samples):
    url, err = server
    got = []
    for s in samples[:3]:
        status, body = post_json(url, payload(s))
        assert status == 200, body
        assert set(body) == KEYS and body["model"] == "zoo:llava", body
        assert all(0 <= body[k] <= 1 for k in NUMBERS)
        got.append(body)
    expected = [scorer(s.load_image(), s.text, list(s.choices))[0] for s in samples[:3]]
    assert_same(got, expected)
    open_ended = {"image": payload(samples[0])["image"], "question": samples[0].text}  # no choices: generation
    status, body = post_json(url, open_ended)
    assert status == 200 and set(body) == KEYS, body
    assert_same([body], scorer(samples[0].load_image(), samples[0].text))
    assert "warning" not in err.read_text()  # loopback: no warning


def test_multipart_answers_with_the_attention_map(server, scorer, samples):
    url, _ = server
    s = samples[1]
    fields = [("question", s.text), *[("choices", c) for c in s.choices], ("attention", "true")]
    status, body = post_form(url, fields, [("image", png(s.load_image()))])
    assert status == 200, body
    assert set(body) == KEYS | {"attention"}
    expected = scorer(s.load_image(), s.text, list(s.choices), attention=True)[0]
    assert_same([body], [expected])
    grid = np.array(body["attention"])
    rows, cols = scorer.adapter.image_geometry(scorer.adapter.encode_samples([s]).items[0]).grid
    assert grid.shape == (rows, cols) == np.array(expected["attention"]).shape
    # renormalised over the image tokens in float64, then averaged: sums to 1 up to a few roundings
    assert_close(grid.sum(), 1.0, dtype=np.float64, scale=1.0, ulps=SUM, what="attention sum")
    assert_close(grid, expected["attention"], dtype=np.float32, scale=1.0, ulps=FORWARD, what="attention")
    # choices as one JSON array, attention off: no map
    fields = [("question", s.text), ("choices", json.dumps(list(s.choices)))]
    status, again = post_form(url, fields, [("image", png(s.load_image()))])
    assert status == 200 and set(again) == KEYS and again["answer"] == body["answer"], again


def test_concurrent_requests_share_batches_and_answer_as_alone(server, scorer, samples):
    url, _ = server
    before = get(url + "/healthz")[1]
    bodies = [payload(s) if i % 4 else {**payload(s), "choices": None} for i, s in enumerate(samples)]
    bodies = [{k: v for k, v in b.items() if v is not None} for b in bodies]  # every 4th open-ended: mixed kinds
    with ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(lambda b: post_json(url, b), bodies))
    assert all(status == 200 for status, _ in replies), replies
    after = get(url + "/healthz")[1]
    served = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    assert served == 16 and batches < 16 and after["max_batch_seen"] > 1, (before, after)
    alone = [scorer(s.load_image(), s.text, b.get("choices"))[0] for s, b in zip(samples, bodies, strict=True)]
    assert_same([body for _, body in replies], alone)


def noise_png(side: int) -> bytes:
    return png(Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)))


def bad_requests(sample) -> list[tuple[str, int, object]]:
    """(what, status, how to send it): each one a refusal."""
    good = payload(sample)
    image = good["image"]
    return [
        ("empty body", 400, b""),
        ("not JSON", 400, b"{image: 1"),
        ("a JSON array", 422, [good]),
        ("no image", 422, {"question": "what shape?"}),
        ("no question", 422, {"image": image}),
        ("empty question", 422, {**good, "question": "  "}),
        ("question not a string", 422, {**good, "question": 3}),
        ("image not base64", 422, {**good, "image": "not base64!"}),
        ("image not an image", 415, {**good, "image": b64(b"hello, this is text")}),
        ("image too large", 413, {**good, "image": b64(noise_png(128))}),
        ("body too large", 413, {**good, "image": b64(b"x" * (MAX_IMAGE_BYTES * 5))}),
        ("choices a string", 422, {**good, "choices": "red"}),
        ("choices empty", 422, {**good, "choices": []}),
        ("choices not strings", 422, {**good, "choices": [1, 2]}),
        ("attention not a boolean", 422, {**good, "attention": "yes"}),
        ("unknown field", 422, {**good, "choice": ["red"]}),
        ("multipart without file", 422, ("form", [("question", sample.text)], [])),
        ("multipart image as text", 422, ("form", [("question", sample.text), ("image", image)], [])),
        ("multipart file not an image", 415, ("form", [("question", sample.text)], [("image", b"GIF89a?")])),
        ("multipart without question", 422, ("form", [], [("image", png(sample.load_image()))])),
    ]


def test_bad_requests_get_a_4xx_and_one_line_and_the_server_goes_on(server, samples):
    url, _ = server
    for what, expected, how in bad_requests(samples[0]):
        if isinstance(how, tuple):
            status, body = post_form(url, how[1], how[2])
        else:
            status, body = post_json(url, how)
        assert status == expected, (what, status, body)
        assert isinstance(body, dict) and set(body) == {"error"}, (what, body)
        assert body["error"].strip() and "\n" not in body["error"], (what, body)
        assert get(url + "/healthz")[0] == 200, what
    status, body = post_chunked(url, b"{" + b" " * (MAX_IMAGE_BYTES * 5) + b"}")  # no Content-Length to check
    assert status == 413 and set(body) == {"error"}, body
    status, body = request(url + "/v1/answer")  # GET
    assert status == 405 and set(body) == {"error"}
    status, body = post_json(url, payload(samples[0]))
    assert status == 200 and set(body) == KEYS


def test_docs_and_openapi(server):
    url, _ = server
    status, html = request(url + "/docs")
    assert status == 200 and "<html" in html.lower() and "swagger" in html.lower()
    status, spec = request(url + "/openapi.json")
    assert status == 200
    body = spec["paths"]["/v1/answer"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    assert "/healthz" in spec["paths"]


# ---- refusals before serving (in this process: they stop before the server runs) ----------------------------------


def one_line(r) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr)
    return lines[0]


@pytest.mark.parametrize(
    ("option", "value"),
    [("--max-batch", "0"), ("--max-wait-ms", "-1"), ("--port", "70000"), ("--max-image-bytes", "0")],
)
def test_bad_settings_are_refused_before_anything_loads(option, value, tmp_path):
    r = run_cli("serve", "--model", "zoo:llava", "--probe", str(tmp_path / "no-probe"), option, value)
    assert option in one_line(r)  # the setting, not the missing probe: checked first


def test_a_port_in_use_is_refused_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        r = run_cli("serve", "--model", "zoo:llava", "--probe", str(tmp_path / "no-probe"), "--port", port)
    assert "in use" in one_line(r)


def test_another_models_probe_is_refused_in_one_line(probe_dir):
    r = run_cli("serve", "--model", "zoo:paligemma", "--probe", str(probe_dir), "--port", "0")
    assert "was trained on model" in one_line(r)


def test_a_non_loopback_address_is_warned_about(tmp_path):
    # binding 0.0.0.0 happens, and the warning is printed, before the probe is read: a missing probe stops it there
    args = ["--probe", str(tmp_path / "no-probe"), "--host", "0.0.0.0", "--port", "0"]
    r = run_cli("serve", "--model", "zoo:llava", *args)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 2, r.stderr
    assert lines[0].startswith("warning: serving on 0.0.0.0") and "no authentication" in lines[0], lines[0]
