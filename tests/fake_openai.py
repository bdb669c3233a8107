"""A small OpenAI-compatible HTTP server for tests, scripted reply by reply.

    with FakeOpenAIServer(owned_by="llamacpp") as server:
        server.push(Reply.error(429, headers={"Retry-After": "1"}), Reply.text('{"a": 1}'))
        ...  # point a client at server.base_url
        server.chat_bodies  # what the client sent

It is a real server (``ThreadingHTTPServer`` on 127.0.0.1, a free port), so
the client's whole HTTP stack (timeouts, keep-alive, headers) is exercised.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer to a chat-completion request."""

    kind: str  # "text" | "tool_call" | "tool_calls" | "error" | "dynamic"
    content: str = ""
    name: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    fn: Callable[[dict], Reply] | None = None
    calls: list[tuple[str, Any]] = field(default_factory=list)  # tool_calls: (name, args dict or raw JSON text)
    top_logprobs: dict[str, float] | None = None  # text: the first token's alternatives, sent as OpenAI's logprobs

    @classmethod
    def text(cls, content: str, *, delay: float = 0.0) -> Reply:
        return cls("text", content=content, delay=delay)

    @classmethod
    def choice(cls, token: str, top: dict[str, float]) -> Reply:
        """One token of answer with its top alternatives (token -> log-probability), as a server returns them
        when asked for ``logprobs``."""
        return cls("text", content=token, top_logprobs=dict(top))

    @classmethod
    def tool_call(cls, name: str, args: dict[str, Any], *, delay: float = 0.0) -> Reply:
        return cls("tool_call", name=name, args=dict(args), delay=delay)

    @classmethod
    def tool_calls(cls, *calls: tuple[str, Any]) -> Reply:
        """Several tool calls in one message; an argument given as a string is sent as it is (bad JSON too)."""
        return cls("tool_calls", calls=list(calls))

    @classmethod
    def error(
        cls, status: int, body: Any = None, headers: dict[str, str] | None = None, *, delay: float = 0.0
    ) -> Reply:
        return cls("error", status=status, body=body, headers=dict(headers or {}), delay=delay)

    @classmethod
    def dynamic(cls, fn: Callable[[dict], Reply]) -> Reply:
        return cls("dynamic", fn=fn)


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    json: Any  # the parsed body (None for GET or an unparsable body)
    at: float  # time.monotonic() on arrival


_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            408: "Request Timeout", 429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable"}


def _words(value: Any) -> int:
    """A crude token count: words in all strings of ``value``."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, dict):
        return sum(_words(v) for v in value.values())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    return 0


def openai_error_body(status: int, message: str, *, param: str | None = None) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


class FakeOpenAIServer:
    """Serves ``GET /v1/models`` and ``POST /v1/chat/completions`` from a reply queue."""

    def __init__(
        self,
        replies: Iterable[Reply | Callable[[dict], Reply]] = (),
        *,
        owned_by: str = "openai",
        model_ids: Iterable[str] = ("fake-model",),
        default: Reply | Callable[[dict], Reply] | None = None,
        reject_fields: Iterable[str] = (),
    ) -> None:
        self.owned_by = owned_by
        self.model_ids = list(model_ids)
        self.default = default if default is not None else Reply.text('{"ok": true}')
        self.reject_fields = set(reject_fields)
        self.requests: list[Recorded] = []
        self._queue: deque[Reply | Callable[[dict], Reply]] = deque(replies)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting and inspection

    def push(self, *replies: Reply | Callable[[dict], Reply]) -> None:
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    @property
    def chat_requests(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and r.path.endswith("/chat/completions")]

    @property
    def chat_bodies(self) -> list[dict]:
        return [r.json for r in self.chat_requests]

    @property
    def model_requests(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and r.path.endswith("/models")]

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- lifecycle

    def start(self) -> FakeOpenAIServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False  # a handler asleep in a delay must not hold up close()
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- answering (called from handler threads)

    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)

    def _next_reply(self, request: dict) -> Reply:
        with self._lock:
            item = self._queue.popleft() if self._queue else self.default
        # Callables and dynamic replies decide from the request.
        for _ in range(10):
            if isinstance(item, Reply) and item.kind == "dynamic" and item.fn is not None:
                item = item.fn(request)
            elif callable(item) and not isinstance(item, Reply):
                item = item(request)
            else:
                break
        assert isinstance(item, Reply), f"scripted reply is not a Reply: {item!r}"
        return item

    def _sleep(self, seconds: float) -> bool:
        """Wait, unless the server closes first (then False)."""
        return not self._closing.wait(seconds) if seconds > 0 else True

    def models_payload(self) -> dict:
        return {
            "object": "list",
            "data": [
                {"id": mid, "object": "model", "created": 1700000000, "owned_by": self.owned_by}
                for mid in self.model_ids
            ],
        }

    def completion_payload(self, request: dict, reply: Reply) -> dict:
        model = request.get("model") or (self.model_ids[0] if self.model_ids else "fake-model")
        prompt_tokens = _words([m.get("content") for m in request.get("messages", []) if isinstance(m, dict)])
        if reply.kind in ("tool_call", "tool_calls"):
            calls = [(reply.name, reply.args)] if reply.kind == "tool_call" else reply.calls
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": f"call_{len(self.requests)}_{i}", "type": "function",
                     "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
                    for i, (name, args) in enumerate(calls, 1)
                ],
            }
            finish, completion_tokens = "tool_calls", sum(_words(a) + 1 for _, a in calls)
        else:
            message = {"role": "assistant", "content": reply.content}
            finish, completion_tokens = "stop", _words(reply.content)
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": _logprobs_block(reply), "finish_reason": finish}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def _logprobs_block(reply: Reply) -> dict | None:
    if reply.top_logprobs is None:
        return None
    alternatives = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in reply.top_logprobs.items()]
    first = {"token": reply.content, "logprob": reply.top_logprobs.get(reply.content, 0.0),
             "bytes": list(reply.content.encode()), "top_logprobs": alternatives}
    return {"content": [first], "refusal": None}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeOpenAIServer  # set on the subclass made in start()

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status, _REASONS.get(status))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            self.close_connection = True

    def _record(self, body: Any) -> None:
        self.fake._record(
            Recorded(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                json=body,
                at=time.monotonic(),
            )
        )

    def do_GET(self) -> None:
        self._record(None)
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, self.fake.models_payload())
        else:
            self._send(404, openai_error_body(404, f"no route {self.path}"))

    def do_POST(self) -> None:
        body = self._read_json()
        self._record(body)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, openai_error_body(404, f"no route {self.path}"))
            return
        if not isinstance(body, dict):
            self._send(400, openai_error_body(400, "request body is not a JSON object"))
            return
        rejected = sorted(self.fake.reject_fields & set(body))
        if rejected:
            message = f"Unrecognized request argument supplied: {rejected[0]}"
            self._send(400, openai_error_body(400, message, param=rejected[0]))
            return
        reply = self.fake._next_reply(body)
        if not self.fake._sleep(reply.delay):
            return
        if reply.kind == "error":
            payload = reply.body
            if payload is None:
                payload = openai_error_body(reply.status, _REASONS.get(reply.status, "error"))
            elif isinstance(payload, str):
                payload = payload.encode()
            self._send(reply.status, payload, reply.headers)
            return
        self._send(200, self.fake.completion_payload(body, reply), reply.headers)


def closed_port() -> int:
    """A local port that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


__all__ = ["FakeOpenAIServer", "Recorded", "Reply", "closed_port", "openai_error_body"]
