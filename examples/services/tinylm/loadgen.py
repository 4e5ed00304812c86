"""Steady load on an OpenAI-compatible endpoint: a replica directly, or a service through a
ComputeNet router. Standard library only.

    python3 loadgen.py --url http://127.0.0.1:8080/v1 --requests 400 --concurrency 8
    python3 loadgen.py --url http://NODE/services/v1/tinylm/v1 --key "$KEY" --stream

Prints requests/s, generated tokens/s, latency p50/p99 and, with --stream, the time to the
first streamed piece; every failure is counted and its first reason printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field


@dataclass
class Tally:
    """What the workers measured, under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies_s: list[float] = field(default_factory=list)
    first_piece_s: list[float] = field(default_factory=list)
    tokens: int = 0
    failures: list[str] = field(default_factory=list)


def one_request(args: argparse.Namespace, seed: int, tally: Tally) -> None:
    """One chat completion, timed (and its first streamed piece, when streamed)."""
    body = {
        "model": args.model,
        "messages": [{"role": "user", "content": args.prompt}],
        "max_tokens": args.max_tokens,
        "seed": seed,
        "stream": args.stream,
    }
    if args.stream:
        body["stream_options"] = {"include_usage": True}  # the last chunk counts the tokens
    headers = {"Content-Type": "application/json"}
    if args.key:
        headers["Authorization"] = f"Bearer {args.key}"
    request = urllib.request.Request(
        args.url.rstrip("/") + "/chat/completions", json.dumps(body).encode(), headers
    )
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    try:
        with urllib.request.urlopen(request, timeout=args.timeout_s) as response:
            if not args.stream:
                tokens = json.load(response)["usage"]["completion_tokens"]
            for line in response if args.stream else ():
                if not line.startswith(b"data: {"):
                    continue
                chunk = json.loads(line[len(b"data: ") :])
                if (
                    first is None
                    and chunk["choices"]
                    and chunk["choices"][0]["delta"].get("content")
                ):
                    first = time.perf_counter() - started
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        with tally.lock:
            tally.failures.append(f"{type(exc).__name__}: {exc}")
        return
    took_s = time.perf_counter() - started
    with tally.lock:
        tally.latencies_s.append(took_s)
        tally.tokens += tokens
        if first is not None:
            tally.first_piece_s.append(first)


def percentile_ms(values: list[float], q: int) -> float:
    """The q-th percentile in milliseconds (the largest value for a short list)."""
    if len(values) < 2:
        return values[0] * 1000 if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="the API base, ending in /v1")
    parser.add_argument("--key", help="service key (Authorization: Bearer)")
    parser.add_argument("--model", default="tinylm")
    parser.add_argument("--prompt", default="What does the router do?")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--timeout-s", type=float, default=30.0)
    args = parser.parse_args()
    tally = Tally()
    seeds = iter(range(args.requests))
    seeds_lock = threading.Lock()

    def worker() -> None:
        while True:
            with seeds_lock:
                seed = next(seeds, None)
            if seed is None:
                return
            one_request(args, seed, tally)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall_s = time.perf_counter() - started
    done = len(tally.latencies_s)
    print(
        f"{done} ok, {len(tally.failures)} failed in {wall_s:.2f} s: "
        f"{done / wall_s:.0f} requests/s, {tally.tokens / wall_s:.0f} tokens/s"
    )
    print(
        f"latency p50 {percentile_ms(tally.latencies_s, 50):.1f} ms, "
        f"p99 {percentile_ms(tally.latencies_s, 99):.1f} ms"
    )
    if tally.first_piece_s:
        print(
            f"first streamed piece p50 {percentile_ms(tally.first_piece_s, 50):.1f} ms, "
            f"p99 {percentile_ms(tally.first_piece_s, 99):.1f} ms"
        )
    if tally.failures:
        print(f"first failure: {tally.failures[0]}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
