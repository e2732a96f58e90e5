"""Benchmark: what batching buys `vrprobe serve`. Throughput and latency at several numbers of concurrent clients,
batching on (`--max-batch B --max-wait-ms W`) against off (`--max-batch 1`), on the same model and probe.

A probe is trained first (`vrprobe.probe` on `--train-data`, in a temporary directory; not timed). Two servers run
side by side (subprocesses of `vrprobe serve` on free loopback ports): one batching, one not. Each client is a
thread with its own keep-alive connection that sends the next request as soon as its last is answered (a closed
loop); the requests are closed-set questions about `--data` images, JSON with base64 PNGs, prepared before timing.
For each number of clients, `--repeats` rounds in which the two servers take turns, the order reversed each turn
(`timing.alternate`); in each turn a server answers `--requests` requests. Both servers must give the same answers
(checked, not timed). Prints the CPU (`serve_load[cpu]: model="..." cores=N torch_threads=T`), then per number of
clients C, each figure as median [min-max] over the rounds:
    serve_load: clients=C on_rps=<r> on_p50_ms=<ms> on_p95_ms=<ms> off_rps=<r> off_p50_ms=<ms> off_p95_ms=<ms>
    speedup=<on_rps / off_rps>
(one line). rps: requests answered per second of the turn (wall clock); p50 / p95: the 50th / 95th percentile of
the turn's request latencies (send to last byte received), in milliseconds; speedup per round. Each server runs
torch on `--threads` threads (default 1: the clients, on the same machine, need a core too; the CPU line shows it).

    python benchmarks/serve_load.py [--model zoo:llava] [--train-data easy-vqa:train] [--train-limit 120]
                                    [--data easy-vqa:test] [--clients 1,4,16] [--requests 64] [--repeats 5]
                                    [--max-batch 16] [--max-wait-ms 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from transformers.utils import logging as hf_logging

import vrprobe
from timing import Spread, alternate, cpu, ratios, set_threads
from vrprobe.data import load_dataset


class Server:
    """A `vrprobe serve` subprocess on a free loopback port; `url` once it has printed its start line."""

    def __init__(self, args: Sequence[str], log: Path, env: dict[str, str]) -> None:
        self.out, self.err = log.with_suffix(".out"), log.with_suffix(".err")
        with open(self.out, "w") as out, open(self.err, "w") as err:
            command = [sys.executable, "-c", "from vrprobe.cli import main; main()", "serve", *args, "--port", "0"]
            self.proc = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        self.host, self.port = "127.0.0.1", 0

    def wait(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not self.out.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serve_load: the server did not start: {self.err.read_text().strip()}")
            time.sleep(0.1)
        url = self.out.read_text().split(" at ")[1].split()[0]
        self.port = int(url.rsplit(":", 1)[1])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def load(server: Server, bodies: Sequence[bytes], clients: int, n: int) -> tuple[list[float], list[str]]:
    """`n` requests (`bodies`, cycled) from `clients` closed-loop clients: each request's latency (s) and answer."""
    latencies, answers = [0.0] * n, [""] * n
    counter = itertools.count()
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=300)
        try:
            while True:
                with lock:
                    i = next(counter)
                if i >= n:
                    return
                t0 = time.perf_counter()
                conn.request("POST", "/v1/answer", bodies[i % len(bodies)], {"Content-Type": "application/json"})
                reply = conn.getresponse()
                data = reply.read()
                latencies[i] = time.perf_counter() - t0
                if reply.status != 200:
                    raise SystemExit(f"serve_load: HTTP {reply.status}: {data.decode(errors='replace')}")
                answers[i] = json.loads(data)["answer"]
        finally:
            conn.close()

    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    return latencies, answers


def payloads(data: str, count: int) -> list[bytes]:
    """JSON request bodies for the first `count` closed-set questions of `data`."""
    bodies = []
    for s in load_dataset(data, limit=count, seed=0).samples:
        buf = io.BytesIO()
        s.load_image().save(buf, "PNG")
        image = base64.b64encode(buf.getvalue()).decode()
        bodies.append(json.dumps({"image": image, "question": s.text, "choices": list(s.choices or ())}).encode())
    return bodies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="zoo:llava")
    parser.add_argument("--train-data", default="easy-vqa:train")
    parser.add_argument("--train-limit", type=int, default=120)
    parser.add_argument("--data", default="easy-vqa:test")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    if min(levels) < 1 or args.requests < max(levels):
        raise SystemExit("serve_load: clients must be >= 1 and --requests at least the largest number of clients")
    set_threads(args.threads)
    hf_logging.disable_progress_bar()
    print(f"serve_load[cpu]: {cpu()}", flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}  # the servers' torch threads
    bodies = payloads(args.data, 32)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "probe-run"
        vrprobe.probe(args.model, args.train_data, args.data, limit=args.train_limit, out=out)
        common = ["--model", args.model, "--probe", str(out / "probe"), "--max-wait-ms", str(args.max_wait_ms)]
        servers = {
            "on": Server([*common, "--max-batch", str(args.max_batch)], Path(tmp) / "on", env),
            "off": Server([*common, "--max-batch", "1"], Path(tmp) / "off", env),
        }
        try:
            for server in servers.values():
                server.wait()
            for server in servers.values():  # warm-up: first forwards, connections
                load(server, bodies, max(levels), max(levels))
            for clients in levels:
                report(clients, servers, bodies, args.requests, args.repeats)
        finally:
            for server in servers.values():
                server.stop()


def report(clients: int, servers: dict[str, Server], bodies: list[bytes], n: int, repeats: int) -> None:
    """Time both servers at `clients` clients over `repeats` alternating rounds and print the level's line."""
    latencies: dict[str, list[list[float]]] = {side: [] for side in servers}
    answers: dict[str, list[str]] = {}

    def side(name: str) -> Any:
        def run() -> None:
            lat, ans = load(servers[name], bodies, clients, n)
            latencies[name].append(lat)
            answers[name] = ans

        return run

    seconds = alternate([side("on"), side("off")], repeats)
    if answers["on"] != answers["off"]:
        raise SystemExit("serve_load: the batching server's answers differ from the other's")
    figures = []
    for name, secs in zip(("on", "off"), seconds, strict=True):
        rps = Spread.of([n / s for s in secs])
        p50 = Spread.of([1000 * float(np.percentile(lat, 50)) for lat in latencies[name]])
        p95 = Spread.of([1000 * float(np.percentile(lat, 95)) for lat in latencies[name]])
        figures.append(f"{name}_rps={rps.fmt(1)} {name}_p50_ms={p50.fmt(1)} {name}_p95_ms={p95.fmt(1)}")
    speedup = ratios(seconds[1], seconds[0])  # on's rps / off's rps = off's seconds / on's seconds, per round
    print(f"serve_load: clients={clients} {' '.join(figures)} speedup={speedup}", flush=True)


if __name__ == "__main__":
    main()
