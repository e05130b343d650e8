"""A small OpenAI-compatible chat-completions server on 127.0.0.1, for testing the VLM HTTP backend.

    with OpenAIServer(script=["500", "429"]) as server:   # the first two requests fail, then all succeed
        ... POST server.url + "/chat/completions" ...
        server.max_in_flight                            # the most requests it ever held at once

Each answer is derived from its request: "N image(s): PROMPT", with usage token counts (prompt:
words of the prompt + 10 per image; completion: words of the answer). `script` lists what the
first requests get instead, one entry each, in arrival order: an HTTP status ("500", "429", "401",
"404"), "slow" (answers after `slow_s`, past the client's timeout), "malformed" (a 200 with broken
JSON) or "empty" (a 200 with an empty answer). Every handler holds its request `hold_s` before
answering, so concurrent requests overlap and `max_in_flight` shows the client's bound.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class OpenAIServer:
    """A threaded loopback server speaking `/v1/chat/completions` and `/v1/models`; a context manager."""

    def __init__(self, *, script: list[str] | None = None, model: str = "tiny-vlm", hold_s: float = 0.0,
                 slow_s: float = 2.0) -> None:
        self.script = list(script or [])
        self.model = model
        self.hold_s = hold_s
        self.slow_s = slow_s
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True  # a "slow" handler still sleeping must not keep the test alive
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        """The base URL clients are given (`http://127.0.0.1:PORT/v1`)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> OpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def take(self, body: dict[str, Any]) -> str:
        """Record a request; what it gets: the next scripted entry, else "ok"."""
        with self._lock:
            self.requests.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.script.pop(0) if self.script else "ok"

    def release(self) -> None:
        """A request was answered (or given up on)."""
        with self._lock:
            self.in_flight -= 1


def answer(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The chat-completions response to `body`: it counts the images and repeats the prompt's start."""
    parts = [p for m in body.get("messages", []) if isinstance(m.get("content"), list) for p in m["content"]]
    images = sum(1 for p in parts if p.get("type") == "image_url")
    prompt = " ".join(p.get("text", "") for p in parts if p.get("type") == "text")
    text = f"{images} image(s): {prompt[:40]}"
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": len(prompt.split()) + 10 * images, "completion_tokens": len(text.split()),
                  "total_tokens": len(prompt.split()) + 10 * images + len(text.split())},
    }


def _handler(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet test output
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.rstrip("/") != "/v1/models":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            plan = server.take(body)
            try:
                time.sleep(server.hold_s)
                self._reply(plan, body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout): nothing to answer
            finally:
                server.release()

        def _reply(self, plan: str, body: dict[str, Any]) -> None:
            if plan.isdigit():
                headers = {"Retry-After": "0"} if plan == "429" else {}
                return self._send(int(plan), {"error": {"message": f"scripted {plan}"}}, headers)
            if plan == "slow":
                time.sleep(server.slow_s)
            if plan == "malformed":
                return self._send_bytes(200, b'{"choices": [{"message": ')
            if body.get("model") != server.model:
                return self._send(404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}})
            reply = answer(body, server.model)
            if plan == "empty":
                reply["choices"][0]["message"]["content"] = ""
            self._send(200, reply)

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            self._send_bytes(status, json.dumps(payload).encode("utf-8"), headers)

        def _send_bytes(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler
