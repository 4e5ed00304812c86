"""The example service examples/services/tinylm: its OpenAI-compatible HTTP API, served by
the system python3 (as in a replica's sandbox), checked with httpx and the official OpenAI
Python client, and its service file."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from typing import Any

import httpx
import openai
import pytest
import yaml

from nodeproc import free_port
from tinylmproc import SYSTEM_PYTHON, TINYLM, tinylm_service


def sse_events(lines: list[str]) -> list[Any]:
    """The data of each server-sent event, '[DONE]' as the string it is."""
    data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    return [d if d == "[DONE]" else json.loads(d) for d in data]


def test_health_models_and_metrics(tinylm: str) -> None:
    assert httpx.get(f"{tinylm}/health").json() == {"status": "ok"}
    models = httpx.get(f"{tinylm}/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["tinylm"]
    assert httpx.get(f"{tinylm}/v1/models/tinylm").json()["object"] == "model"
    before = httpx.get(f"{tinylm}/metrics").text
    httpx.post(f"{tinylm}/v1/completions", json={"prompt": "A task", "max_tokens": 5})
    after = httpx.get(f"{tinylm}/metrics").text

    def value(text: str, name: str) -> float:
        line = next(x for x in text.splitlines() if x.startswith(f"vllm:{name}{{"))
        return float(line.rsplit(" ", 1)[1])

    assert value(after, "generation_tokens_total") - value(before, "generation_tokens_total") <= 5
    assert value(after, "generation_tokens_total") > value(before, "generation_tokens_total")
    assert value(after, "request_success_total") == value(before, "request_success_total") + 1
    assert value(after, "num_requests_running") == 0


def test_completions(tinylm: str) -> None:
    body = {"model": "tinylm", "prompt": "The river", "max_tokens": 20, "seed": 4}
    got = httpx.post(f"{tinylm}/v1/completions", json=body).json()
    assert got["object"] == "text_completion" and got["id"].startswith("cmpl-")
    [choice] = got["choices"]
    assert choice["finish_reason"] in ("stop", "length") and choice["text"]
    usage = got["usage"]
    assert usage["prompt_tokens"] == 2 and 1 <= usage["completion_tokens"] <= 20
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # A seed repeats it; n gives that many choices, and a list of prompts one set each.
    again = httpx.post(f"{tinylm}/v1/completions", json=body).json()
    assert again["choices"] == got["choices"]
    many = httpx.post(
        f"{tinylm}/v1/completions", json={**body, "prompt": ["The river", "A pool"], "n": 3}
    ).json()
    assert [c["index"] for c in many["choices"]] == list(range(6))
    assert many["choices"][0]["text"] == choice["text"]  # the first choice keeps the seed
    # top_p 0 keeps only the likeliest word: greedy, as temperature 0 is.
    greedy = {"prompt": "The scheduler", "max_tokens": 12, "temperature": 0}
    nucleus = {"prompt": "The scheduler", "max_tokens": 12, "top_p": 0, "seed": 9}
    texts = [
        httpx.post(f"{tinylm}/v1/completions", json=b).json()["choices"][0]["text"]
        for b in (greedy, nucleus)
    ]
    assert texts[0] == texts[1]


def test_chat_completions(tinylm: str) -> None:
    body = {
        "model": "tinylm",
        "messages": [
            {"role": "system", "content": "You are brief."},
            {"role": "user", "content": [{"type": "text", "text": "What is a gateway?"}]},
        ],
        "max_tokens": 30,
        "temperature": 0.7,
        "seed": 1,
        "stop": ["\n"],
    }
    got = httpx.post(f"{tinylm}/v1/chat/completions", json=body).json()
    assert got["object"] == "chat.completion" and got["id"].startswith("chatcmpl-")
    [choice] = got["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].startswith("Gateway")
    assert got["usage"]["prompt_tokens"] == 5  # the question the reply answers


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/v1/completions", b"{not json", 400, "not valid JSON"),
        ("/v1/completions", b"[1, 2]", 400, "JSON object"),
        ("/v1/completions", b'{"prompt": [1, 2]}', 400, "'prompt'"),
        ("/v1/completions", b'{"prompt": "x", "max_tokens": 0}', 400, "'max_tokens'"),
        ("/v1/completions", b'{"prompt": "x", "temperature": "hot"}', 400, "'temperature'"),
        ("/v1/completions", b'{"prompt": "x", "stop": [1]}', 400, "'stop'"),
        ("/v1/completions", b'{"prompt": "x", "stream": "yes"}', 400, "'stream'"),
        ("/v1/completions", b'{"prompt": "x", "model": "gpt-9"}', 404, "gpt-9"),
        ("/v1/chat/completions", b'{"messages": []}', 400, "'messages'"),
        ("/v1/chat/completions", b'{"messages": [{"content": "hi"}]}', 400, "'role'"),
        ("/v1/embeddings", b"{}", 404, "no such path"),
    ],
)
def test_bad_requests_get_a_clear_error(
    tinylm: str, path: str, body: bytes, status: int, says: str
) -> None:
    resp = httpx.post(f"{tinylm}{path}", content=body)
    assert resp.status_code == status
    error = resp.json()["error"]
    assert says in error["message"] and error["type"] == "invalid_request_error"


def test_a_streamed_completion_arrives_chunk_by_chunk(slow_tinylm: str) -> None:
    body = {"prompt": "The library", "max_tokens": 15, "seed": 2, "temperature": 0.5}
    whole = httpx.post(f"{slow_tinylm}/v1/completions", json=body, timeout=30).json()
    arrivals: list[float] = []
    lines: list[str] = []
    started = time.monotonic()
    with httpx.stream(
        "POST",
        f"{slow_tinylm}/v1/completions",
        json={**body, "stream": True, "stream_options": {"include_usage": True}},
        timeout=30,
    ) as resp:
        assert resp.headers["content-type"] == "text/event-stream"
        assert resp.headers["transfer-encoding"] == "chunked"
        for line in resp.iter_lines():
            arrivals.append(time.monotonic() - started)
            lines.append(line)
    events = sse_events(lines)
    assert events[-1] == "[DONE]"
    *chunks, usage_chunk, _ = events
    assert all(c["object"] == "text_completion" and c["id"] == chunks[0]["id"] for c in chunks)
    # The same text as the whole reply (same seed), given out in pieces as they were made:
    # at 40 ms a token the first piece comes long before the last.
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    texts = [c for c in chunks if c["choices"][0]["text"]]
    assert len(texts) >= 3
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: "))
    assert arrivals[-1] - arrivals[first_data] >= 0.04 * (len(texts) - 1) * 0.8
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == whole["usage"]


def test_a_streamed_chat_completion(slow_tinylm: str) -> None:
    body = {"messages": [{"role": "user", "content": "Tell me about bread"}], "max_tokens": 6}
    with httpx.stream(
        "POST", f"{slow_tinylm}/v1/chat/completions", json={**body, "stream": True}, timeout=30
    ) as resp:
        events = sse_events(list(resp.iter_lines()))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.startswith("Bread")
    assert not any("usage" in c for c in chunks)  # only when stream_options asks for it


def test_requests_are_served_concurrently(slow_tinylm: str) -> None:
    # Eight requests of 25 tokens at 40 ms each: 8 s one after another, 1 s together (the
    # bound leaves room for a busy 2-core machine).
    body = {"prompt": "The", "max_tokens": 25, "temperature": 0}
    tokens: list[int] = []

    def one() -> None:
        got = httpx.post(f"{slow_tinylm}/v1/completions", json=body, timeout=30).json()
        tokens.append(got["usage"]["completion_tokens"])

    threads = [threading.Thread(target=one) for _ in range(8)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    took_s = time.monotonic() - started
    assert tokens == [25] * 8
    assert took_s < 8 * 25 * 0.04 / 2, took_s


def test_the_official_openai_client_works_unchanged(tinylm: str) -> None:
    client = openai.OpenAI(base_url=f"{tinylm}/v1", api_key="unused-here", max_retries=0)
    assert [m.id for m in client.models.list()] == ["tinylm"]
    completion = client.completions.create(model="tinylm", prompt="A pool", max_tokens=8, seed=3)
    assert completion.choices[0].text and completion.usage is not None
    assert completion.usage.completion_tokens <= 8
    chat = client.chat.completions.create(
        model="tinylm",
        messages=[{"role": "user", "content": "How does billing work?"}],
        max_tokens=12,
        seed=3,
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content and chat.choices[0].message.content.startswith("Billing")
    stream = client.chat.completions.create(
        model="tinylm",
        messages=[{"role": "user", "content": "How does billing work?"}],
        max_tokens=12,
        seed=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(pieces) == chat.choices[0].message.content
    assert usage is not None and chat.usage is not None
    assert usage.total_tokens == chat.usage.total_tokens
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="gpt-9", prompt="x")
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="tinylm", prompt="x", max_tokens=100_000)


def test_the_service_file_names_the_files_beside_it() -> None:
    raw = yaml.safe_load((TINYLM / "service.yaml").read_text())
    assert [i["local"] for i in raw["inputs"]] == ["server.py", "tinylm.py", "corpus.txt"]
    spec = tinylm_service()  # what deploy sends: each file's current content
    for item in spec["inputs"]:
        assert "local" not in item
        assert item["content"] == (TINYLM / item["path"]).read_text()
    assert spec["executor"]["command"][:2] == ["python3", "server.py"]
    assert spec["health"]["path"] == "/health"


def test_the_load_generator_counts_requests_tokens_and_failures(tinylm: str) -> None:
    loadgen = [SYSTEM_PYTHON, str(TINYLM / "loadgen.py")]
    args = ["--requests", "20", "--concurrency", "3", "--max-tokens", "5"]
    for extra in ([], ["--stream"]):
        run = subprocess.run(
            [*loadgen, "--url", f"{tinylm}/v1", *args, *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout.startswith("20 ok, 0 failed"), run.stdout
        assert ("first streamed piece" in run.stdout) == bool(extra)
    refused = subprocess.run(
        [*loadgen, "--url", f"http://127.0.0.1:{free_port()}/v1", "--requests", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "0 ok, 2 failed" in refused.stdout
    assert "first failure: URLError" in refused.stdout
