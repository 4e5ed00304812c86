"""tinylm: an OpenAI-compatible HTTP server for a small language model it trains at start.

    python3 server.py [--port PORT] [--corpus corpus.txt] [--delay-ms-per-token MS]

Serves GET /health, GET /v1/models, POST /v1/completions and POST /v1/chat/completions
(``stream: true`` sends server-sent events in OpenAI's chunk format, ending with
``data: [DONE]``), and GET /metrics (Prometheus text). It listens on $PORT (8080 when unset)
on 127.0.0.1: a ComputeNet replica has no network, and its gateway reaches that port through
a socket it owns. Standard library only: replicas run with the host's system python3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tinylm import NgramModel, Sampling, tokenize

MAX_BODY_BYTES = 1024 * 1024
MAX_TOKENS_LIMIT = 4096
MAX_CHOICES = 8
MAX_STOPS = 4  # OpenAI's limit on stop sequences


class BadRequest(Exception):
    """A request the server refuses: sent back as an OpenAI-style error with its status."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.status = status


class Counters:
    """What /metrics reports; the names follow vLLM's so one scrape rule reads both servers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.requests = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0

    def start(self) -> None:
        with self._lock:
            self.running += 1
            self.requests += 1

    def finish(self, prompt_tokens: int, generation_tokens: int) -> None:
        with self._lock:
            self.running -= 1
            self.prompt_tokens += prompt_tokens
            self.generation_tokens += generation_tokens

    def exposition(self, model_name: str) -> str:
        label = f'{{model_name="{model_name}"}}'
        with self._lock:
            rows = [
                ("num_requests_running", "gauge", "Requests being served now", self.running),
                ("request_success_total", "counter", "Requests served", self.requests),
                ("prompt_tokens_total", "counter", "Prompt tokens read", self.prompt_tokens),
                ("generation_tokens_total", "counter", "Tokens generated", self.generation_tokens),
            ]
        lines = []
        for name, kind, help_text, value in rows:
            lines += [f"# HELP vllm:{name} {help_text}", f"# TYPE vllm:{name} {kind}"]
            lines.append(f"vllm:{name}{label} {value}")
        return "\n".join(lines) + "\n"


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BadRequest(f"'{name}' must be a number from {low} to {high}", name)
    return float(value)


def _integer(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"'{name}' must be an integer from {low} to {high}", name)
    return value


def sampling_of(body: dict[str, Any], default_max_tokens: int) -> Sampling:
    """The sampling parameters of a request body, checked."""
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or len(stops) > MAX_STOPS:
        raise BadRequest(f"'stop' must be a string or a list of at most {MAX_STOPS}", "stop")
    if not all(isinstance(s, str) for s in stops):
        raise BadRequest("'stop' must hold strings", "stop")
    limit = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest("'seed' must be an integer", "seed")
    return Sampling(
        max_tokens=_integer(body, limit, default_max_tokens, 1, MAX_TOKENS_LIMIT),
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        # top_p 0 keeps only the likeliest word (a nucleus holds at least one).
        top_p=max(_number(body, "top_p", 1.0, 0.0, 1.0), 1e-9),
        stop=stops,
        seed=seed,
    )


def prompts_of(body: dict[str, Any]) -> list[str]:
    """The prompts of a completions request: a string or a list of strings."""
    prompt = body.get("prompt", "")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise BadRequest("'prompt' must be a string or a non-empty list of strings", "prompt")
    return prompts


def chat_prompt(body: dict[str, Any]) -> str:
    """The text a chat request asks about: the last user message (text parts joined)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list", "messages")
    texts: list[tuple[str, str]] = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest("each message needs a 'role' and 'content'", "messages")
        content = message.get("content") or ""
        if isinstance(content, list):
            parts = [p.get("text", "") for p in content if isinstance(p, dict)]
            content = " ".join(p for p in parts if isinstance(p, str))
        if not isinstance(content, str):
            raise BadRequest("message 'content' must be a string or a list of parts", "messages")
        texts.append((message["role"], content))
    users = [text for role, text in texts if role == "user"]
    return users[-1] if users else texts[-1][1]


class Handler(BaseHTTPRequestHandler):
    """The OpenAI-compatible API; one thread per connection (ThreadingHTTPServer)."""

    protocol_version = "HTTP/1.1"
    server_version = "tinylm/1"
    # Set by serve() for every handler: the trained model and the server's settings.
    model: NgramModel
    model_name: str
    delay_s: float
    counters: Counters
    quiet: bool
    started = int(time.time())

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            super().log_message(format, *args)

    # -- plumbing -------------------------------------------------------------------------

    def _send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, error: BadRequest) -> None:
        kind = "invalid_request_error" if error.status < 500 else "server_error"
        body = {"message": str(error), "type": kind, "param": error.param, "code": None}
        if error.status == 404:
            body["code"] = "model_not_found" if error.param == "model" else "not_found"
        self._send_json(error.status, {"error": body})

    def _read_body(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise BadRequest("Content-Length must be a number") from None
        if length > MAX_BODY_BYTES:
            # The body stays unread, so this connection cannot carry another request.
            self.close_connection = True
            raise BadRequest(f"the body is over {MAX_BODY_BYTES} bytes", status=413)
        raw = self.rfile.read(length) if length > 0 else b""
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        model = body.get("model")
        if model is not None and model != self.model_name:
            raise BadRequest(f"the model '{model}' does not exist", "model", status=404)
        return body

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _stream(self, events: Iterator[dict[str, Any]]) -> None:
        """Server-sent events, one chunk of the HTTP/1.1 chunked body per event."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            self._write_chunk(b"data: " + json.dumps(event).encode() + b"\n\n")
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")

    # -- routes ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self._send_json(200, {"status": "ok"})
        elif path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [self._model_card()]})
        elif path == f"/v1/models/{self.model_name}":
            self._send_json(200, self._model_card())
        elif path == "/metrics":
            data = self.counters.exposition(self.model_name).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self._send_error(BadRequest(f"no such path: GET {path}", status=404))

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        routes = {"/v1/completions": self._completions, "/v1/chat/completions": self._chat}
        route = routes.get(path)
        if route is None:
            # Unread body: close rather than misread it as the next request.
            self.close_connection = True
            self._send_error(BadRequest(f"no such path: POST {path}", status=404))
            return
        try:
            body = self._read_body()
            route(body)
        except BadRequest as error:
            self._send_error(error)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-reply: nothing to tell it

    def _model_card(self) -> dict[str, Any]:
        return {
            "id": self.model_name,
            "object": "model",
            "created": self.started,
            "owned_by": "computenet-example",
        }

    def _run(self, body: dict[str, Any], prompts: list[str], chat: bool) -> None:
        sampling = sampling_of(body, default_max_tokens=128 if chat else 16)
        n = _integer(body, "n", 1, 1, MAX_CHOICES)
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise BadRequest("'stream' must be true or false", "stream")
        options = body.get("stream_options") or {}
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        kind = "chat.completion" if chat else "text_completion"
        reply = Reply(self, prompts, n, sampling, chat)
        head = {
            "id": reply.id,
            "object": kind,
            "created": int(time.time()),
            "model": self.model_name,
        }
        self.counters.start()
        try:
            if stream:
                self._stream(
                    reply.events(
                        head | {"object": kind + (".chunk" if chat else "")}, include_usage
                    )
                )
            else:
                self._send_json(200, head | reply.whole())
        finally:
            self.counters.finish(reply.prompt_tokens, reply.completion_tokens)

    def _completions(self, body: dict[str, Any]) -> None:
        self._run(body, prompts_of(body), chat=False)

    def _chat(self, body: dict[str, Any]) -> None:
        self._run(body, [chat_prompt(body)], chat=True)


class Reply:
    """The choices of one request: n completions of each prompt, generated token by token."""

    def __init__(
        self, handler: Handler, prompts: list[str], n: int, sampling: Sampling, chat: bool
    ) -> None:
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.handler = handler
        self.chat = chat
        self.jobs = []
        for i, prompt in enumerate(prompts):
            for j in range(n):
                # Each choice its own seed, so choices differ yet a seeded request repeats.
                seed = None if sampling.seed is None else sampling.seed + i * n + j
                job = Sampling(
                    sampling.max_tokens, sampling.temperature, sampling.top_p, sampling.stop, seed
                )
                self.jobs.append(handler.model.generate(prompt, job, reply=chat))
        self.prompt_tokens = sum(len(tokenize(p)) for p in prompts)
        self.completion_tokens = 0

    def _pieces(self, index: int) -> Iterator[str]:
        """The text pieces of one choice, paced by the per-token delay."""
        for piece in self.jobs[index]:
            if self.handler.delay_s:
                time.sleep(self.handler.delay_s)
            yield piece
        self.completion_tokens += self.jobs[index].tokens

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def _choice(self, index: int, text: str, finish: str | None, delta: bool) -> dict[str, Any]:
        if not self.chat:
            return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
        message: dict[str, Any] = (
            {"content": text} if delta else {"role": "assistant", "content": text}
        )
        key = "delta" if delta else "message"
        return {"index": index, key: message, "logprobs": None, "finish_reason": finish}

    def whole(self) -> dict[str, Any]:
        """The body of a non-streamed reply (less id, object, created and model)."""
        choices = []
        for index, job in enumerate(self.jobs):
            text = "".join(self._pieces(index))
            choices.append(self._choice(index, text, job.finish_reason, delta=False))
        return {"choices": choices, "usage": self.usage()}

    def events(self, head: dict[str, Any], include_usage: bool) -> Iterator[dict[str, Any]]:
        """The chunks of a streamed reply: each choice's pieces as they come, then its end."""
        for index, job in enumerate(self.jobs):
            if self.chat:
                first = {
                    "index": index,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
                yield head | {"choices": [first]}
            for piece in self._pieces(index):
                if piece:
                    yield head | {"choices": [self._choice(index, piece, None, delta=True)]}
            end = self._choice(index, "", job.finish_reason, delta=True)
            if self.chat:
                end["delta"] = {}
            yield head | {"choices": [end]}
        if include_usage:
            yield head | {"choices": [], "usage": self.usage()}


def serve(args: argparse.Namespace) -> None:
    """Train the model, then answer on host:port until stopped (``--check``: answer one
    completion of our own, print it and stop)."""
    started = time.monotonic()
    model = NgramModel(Path(args.corpus).read_text(encoding="utf-8"))
    took_ms = (time.monotonic() - started) * 1000
    Handler.model = model
    Handler.model_name = args.model_name
    Handler.delay_s = args.delay_ms_per_token / 1000
    Handler.counters = Counters()
    Handler.quiet = args.quiet
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(
        f"tinylm: trained on {model.total} tokens ({model.vocabulary_size} words) in "
        f"{took_ms:.0f} ms; serving '{args.model_name}' on http://{args.host}:{server.server_address[1]}",
        file=sys.stderr,
        flush=True,
    )
    if args.check:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print(self_check(args.host, server.server_address[1], args.model_name))
        server.shutdown()
        server.server_close()
        return
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def self_check(host: str, port: int, model_name: str) -> str:
    """One completion through the HTTP API, as a client would ask for it (JSON text)."""
    body = {"model": model_name, "prompt": "A gateway", "max_tokens": 12, "seed": 0}
    request = urllib.request.Request(
        f"http://{host}:{port}/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(response.read().decode())


def main(argv: list[str] | None = None) -> None:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--corpus", default=str(here / "corpus.txt"))
    parser.add_argument("--model-name", default="tinylm")
    parser.add_argument(
        "--delay-ms-per-token",
        type=float,
        default=0.0,
        help="sleep this long per token (load tests: a slower model)",
    )
    parser.add_argument("--quiet", action="store_true", help="no access log on stderr")
    parser.add_argument(
        "--check", action="store_true", help="answer one completion of our own, print it, exit"
    )
    serve(parser.parse_args(argv))


if __name__ == "__main__":
    main()
