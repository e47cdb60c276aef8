"""A loopback fake LLM provider speaking the OpenAI and Anthropic wire formats.

It serves, on 127.0.0.1:0 inside the test process:

- `POST /v1/chat/completions` (OpenAI): a `chat.completion` object, or with `"stream": true` an
  SSE stream of `chat.completion.chunk` events (`data: {...}` lines) closed by `data: [DONE]`;
- `POST /v1/messages` (Anthropic): a `message` object, or with `"stream": true` the named SSE
  events `message_start`, `content_block_start`, `content_block_delta` (`text_delta`),
  `content_block_stop`, `message_delta`, `message_stop`;
- any other method and path: 200 `{method, path}`, a stand-in for a plain REST API (the
  Google-style and GitHub-style recipes of docs/proxy.md).

Like the real providers it checks the API key — `Authorization: Bearer` for OpenAI, `x-api-key`
or `Authorization: Bearer` for Anthropic — against the one it was given and answers 401 in its own error format otherwise,
so a reply at all proves the real secret arrived. It records every request (method, path with
query, headers, body) in `seen`, chunked request bodies included.

What it says is chosen by the last user message (see `Reply`): a greeting; the key it received,
whole (`ECHO_KEY`) or one small token per delta (`ECHO_KEY_TOKENS`) — the test of scrubbing,
since a real upstream can echo what it is sent; or a greeting whose stream stops after the first
delta until `gate` is set (`WAIT_AT_GATE`), with `finished` set once the last event is sent — the
test that a stream reaches the client as it is produced.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GREETING = ["Hello", " from", " the", " fake", " provider", "."]
ECHO_KEY = "Please repeat my API key."
ECHO_KEY_TOKENS = "Please repeat my API key, token by token."
# The same, every other delta event also carrying `"x_nan": NaN`: Python's `json` (which the SDKs
# use) reads it, serde_json does not (review #6 of docs/reviews/2026-12-05-proxy.md).
ECHO_KEY_TOKENS_NAN = "Please repeat my API key, token by token, with NaN in between."
WAIT_AT_GATE = "Greet me, slowly."
# How long a gated stream waits for the test before sending the rest anyway (the test then fails
# on `finished` being set, rather than hanging).
GATE_TIMEOUT_S = 60.0


@dataclass
class Seen:
    method: str
    path: str
    headers: list[tuple[str, str]]  # lower-case names, in the order received
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name.lower()]
        return values[0] if values else None

    def everything(self) -> str:
        """Method, path, query, every header and the body as one text, for needle searches."""
        head = "\n".join(f"{k}: {v}" for k, v in self.headers)
        return f"{self.method} {self.path}\n{head}\n\n{self.body.decode('utf-8', 'replace')}"


@dataclass
class Provider:
    openai_key: str
    anthropic_key: str
    base: str = ""
    seen: list[Seen] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.seen.clear()
        self.gate.clear()
        self.finished.clear()

    def requests(self) -> list[Seen]:
        with self.lock:
            return list(self.seen)


def tokens_of(text: str, size: int = 3) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def reply_tokens(prompt: str, key: str) -> list[str]:
    """The text deltas of the answer to `prompt` (joined, they are the whole answer)."""
    if prompt == ECHO_KEY:
        return ["Your key is ", key, "."]
    if prompt in (ECHO_KEY_TOKENS, ECHO_KEY_TOKENS_NAN):
        return ["Your key is ", *tokens_of(key), "."]
    return list(GREETING)


def last_user_text(messages) -> str:
    for m in reversed(messages or []):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _handler(provider: Provider):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive and chunked replies, as real providers

        def log_message(self, *args):  # keep pytest output clean
            pass

        def _read_body(self) -> bytes:
            if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                body = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return body
                    body += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("content-length") or 0)
            return self.rfile.read(length) if length else b""

        def _record(self) -> Seen:
            seen = Seen(self.command, self.path,
                        [(k.lower(), v) for k, v in self.headers.items()], self._read_body())
            with provider.lock:
                provider.seen.append(seen)
            return seen

        def _json(self, status: int, obj) -> None:
            out = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def _start_stream(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream; charset=utf-8")
            self.send_header("cache-control", "no-cache")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def _end_stream(self) -> None:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _deltas(self, prompt: str, key: str, send) -> None:
            """Sends each delta with `send`, waiting at the gate after the first if asked."""
            deltas = reply_tokens(prompt, key)
            for i, text in enumerate(deltas):
                send(text)
                if i == 0 and prompt == WAIT_AT_GATE:
                    provider.gate.wait(GATE_TIMEOUT_S)

        def do_POST(self):
            seen = self._record()
            try:
                req = json.loads(seen.body or b"{}")
            except ValueError:
                req = {}
            path = self.path.split("?", 1)[0]
            if path == "/v1/chat/completions":
                self._openai(seen, req)
            elif path == "/v1/messages":
                self._anthropic(seen, req)
            else:
                # Any other path: a plain REST API (Google's, GitHub's in the recipes) that says
                # what it was asked; the tests read the credential it got from `seen`.
                self._json(200, {"method": self.command, "path": path})

        do_GET = do_PUT = do_DELETE = do_PATCH = do_POST

        # ----- OpenAI ---------------------------------------------------------------------

        def _openai(self, seen: Seen, req: dict) -> None:
            auth = seen.header("authorization") or ""
            key = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
            if key != provider.openai_key:
                self._json(401, {"error": {
                    "message": "Incorrect API key provided.", "type": "invalid_request_error",
                    "param": None, "code": "invalid_api_key"}})
                return
            prompt = last_user_text(req.get("messages"))
            model = req.get("model", "gpt-fake")
            created = int(time.time())
            if not req.get("stream"):
                text = "".join(reply_tokens(prompt, key))
                self._json(200, {
                    "id": "chatcmpl-fake1", "object": "chat.completion", "created": created,
                    "model": model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
                })
                return

            sent = [0]

            def event(delta: dict, finish: str | None = None) -> None:
                chunk = {"id": "chatcmpl-fake1", "object": "chat.completion.chunk",
                         "created": created, "model": model,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                sent[0] += 1
                if prompt == ECHO_KEY_TOKENS_NAN and sent[0] % 2 == 0:
                    chunk["x_nan"] = float("nan")
                self._chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")

            self._start_stream()
            first = [True]

            def send(text: str) -> None:
                delta = {"content": text}
                if first[0]:
                    delta["role"] = "assistant"
                    first[0] = False
                event(delta)

            self._deltas(prompt, key, send)
            event({}, "stop")
            self._chunk(b"data: [DONE]\n\n")
            provider.finished.set()
            self._end_stream()

        # ----- Anthropic ------------------------------------------------------------------

        def _anthropic(self, seen: Seen, req: dict) -> None:
            # The API takes its key as `x-api-key` (the SDK's choice before 2.x) or as a Bearer
            # token (the SDK's choice since): as Vultrino may present either.
            auth = seen.header("authorization") or ""
            key = seen.header("x-api-key") or (auth[7:] if auth.startswith("Bearer ") else "")
            if key != provider.anthropic_key:
                self._json(401, {"type": "error", "error": {
                    "type": "authentication_error", "message": "invalid x-api-key"}})
                return
            prompt = last_user_text(req.get("messages"))
            model = req.get("model", "claude-fake")
            message = {"id": "msg_fake1", "type": "message", "role": "assistant", "model": model,
                       "content": [], "stop_reason": None, "stop_sequence": None,
                       "usage": {"input_tokens": 5, "output_tokens": 1}}
            if not req.get("stream"):
                text = "".join(reply_tokens(prompt, key))
                message.update(content=[{"type": "text", "text": text}],
                               stop_reason="end_turn", usage={"input_tokens": 5, "output_tokens": 7})
                self._json(200, message)
                return

            sent = [0]

            def event(name: str, data: dict) -> None:
                sent[0] += 1
                if prompt == ECHO_KEY_TOKENS_NAN and sent[0] % 2 == 0:
                    data = {**data, "x_nan": float("nan")}
                self._chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

            self._start_stream()
            event("message_start", {"type": "message_start", "message": message})
            event("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}})
            self._deltas(prompt, key, lambda text: event("content_block_delta", {
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text}}))
            event("content_block_stop", {"type": "content_block_stop", "index": 0})
            event("message_delta", {"type": "message_delta",
                                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                    "usage": {"output_tokens": 7}})
            event("message_stop", {"type": "message_stop"})
            provider.finished.set()
            self._end_stream()

    return Handler


def start(openai_key: str, anthropic_key: str) -> tuple[Provider, ThreadingHTTPServer]:
    provider = Provider(openai_key=openai_key, anthropic_key=anthropic_key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(provider))
    server.daemon_threads = True
    provider.base = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return provider, server
