"""A fault-injecting HTTP proxy for S3 tests: it forwards requests to an S3-protocol server (moto) and
fails a seeded fraction of them the ways S3 does.

    with moto_server() as env, FaultProxy(env["AWS_ENDPOINT_URL"], fraction=0.1) as proxy:
        env["AWS_ENDPOINT_URL"] = proxy.url   # boto3 and pyarrow now go through the faults

Faults, drawn evenly from `kinds` (`KINDS` by default):
- `500`: a 500 InternalError answer; the request never reaches the server.
- `503`: a 503 SlowDown answer (S3's throttling); the request never reaches the server.
- `drop`: the connection is closed without an answer, after half of the request's body (mid-upload);
  the request never reaches the server.
- `lost`: the server carries the request out, then the connection is closed without an answer, or
  for a GET after half of the object's bytes (mid-download). Only idempotent methods (GET, HEAD, PUT,
  DELETE) get it: a POST carried out twice is not the same as once (moto refuses a second
  CompleteMultipartUpload of one upload).
Every other request is forwarded as it came (method, path, query, headers, body), so SigV4 signatures
still hold, and the answer is passed back as it came (a GET's body streamed).
"""

from __future__ import annotations

import http.client
import random
import re
import threading
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KINDS = ("500", "503", "drop", "lost")
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})
# Headers about one connection, not the request: never forwarded as they came.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                         "proxy-connection", "expect"})
_ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "SlowDown", "Please reduce your request rate."),
}
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Created:
    """An object made visible (by a single PUT or a completed multipart upload): its /bucket/key and bytes."""

    path: str
    body: bytes


class FaultProxy:
    """A threaded proxy on 127.0.0.1 in front of `target` (http://HOST:PORT) that fails `fraction` of requests,
    drawn by a random generator seeded with `seed`.

    `injected` counts the faults made per kind; `created` lists every object made visible (a single PUT,
    a completed multipart upload), so a test can check that each version ever visible was whole;
    `declared_attempts` counts requests by the attempts their SDK says it makes (botocore's
    `amz-sdk-request: attempt=1; max=10`; None where the header names none, as the AWS C++ SDK's). Use it as
    a context manager.
    """

    def __init__(self, target: str, *, fraction: float, seed: int = 0, kinds: tuple[str, ...] = KINDS) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError(f"`fraction` must be within [0, 1], got {fraction}")
        unknown = set(kinds) - set(KINDS)
        if unknown or not kinds:
            raise ValueError(f"`kinds` must be a non-empty subset of {KINDS}, got {kinds}")
        parsed = urllib.parse.urlsplit(target)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.fraction = fraction
        self.kinds = kinds
        self.injected: Counter[str] = Counter()
        self.declared_attempts: Counter[int | None] = Counter()
        self.requests = 0
        self.created: list[Created] = []
        self._rng = random.Random(seed)
        self._burst: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self._server.handle_error = lambda request, address: None  # a client that hung up is not an error
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        """The endpoint to give clients instead of the target's."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail_next(self, count: int, kind: str) -> None:
        """Give the next `count` requests fault `kind`, whatever their method and the fraction (a burst, as S3
        throttles)."""
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}")
        with self._lock:
            self._burst = [kind] * count

    def draw(self, method: str, sdk_request: str | None = None) -> str | None:
        """The fault for the next request with `method` (and `amz-sdk-request` header), or None to forward it
        untouched."""
        declared = re.search(r"max=(\d+)", sdk_request or "")
        with self._lock:
            self.requests += 1
            self.declared_attempts[int(declared.group(1)) if declared else None] += 1
            if self._burst:
                kind = self._burst.pop()
                self.injected[kind] += 1
                return kind
            if self._rng.random() >= self.fraction:
                return None
            kinds = [k for k in self.kinds if k != "lost" or method in _IDEMPOTENT] or ["503"]
            kind = self._rng.choice(kinds)
            self.injected[kind] += 1
            return kind

    def record(self, path: str, body: bytes) -> None:
        """Note an object made visible at `path` with `body`."""
        with self._lock:
            self.created.append(Created(path, body))


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1: keep-alive, and `Expect: 100-continue` answered before the body is read (botocore sends it).
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
        """Quiet: one line per request would drown the test's output."""

    def do_GET(self) -> None:  # noqa: N802 - http.server dispatches on these names
        self._serve()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def _serve(self) -> None:
        proxy: FaultProxy = self.server.proxy
        fault = proxy.draw(self.command, self.headers.get("amz-sdk-request"))
        if fault == "drop":
            self._read_body(half=True)
            self.close_connection = True
            return
        body = self._read_body()
        if fault in _ERRORS:
            self._answer_error(*_ERRORS[fault])
            return
        upstream = http.client.HTTPConnection(*proxy.upstream, timeout=120)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    upstream.putheader(name, value)
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body or None)
            response = upstream.getresponse()
            self._relay(proxy, response, body, lost=fault == "lost")
        finally:
            upstream.close()

    def _read_body(self, *, half: bool = False) -> bytes:
        """The request's body (Content-Length or chunked); with `half`, read half of it and stop."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
                if half:
                    return b""
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length // 2 if half else length)

    def _answer_error(self, status: int, code: str, message: str) -> None:
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                f"<Resource>{self.path.split('?', 1)[0]}</Resource><RequestId>FAULTPROXY</RequestId></Error>"
                ).encode("utf-8")
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _relay(self, proxy: FaultProxy, response: http.client.HTTPResponse, body: bytes, *, lost: bool) -> None:
        """Send the server's answer back (or, when `lost`, none or half of it, then hang up)."""
        # A GET's body is streamed (objects can be large); other answers are small XML, read whole.
        length = response.getheader("Content-Length") if self.command == "GET" else None
        payload = b"" if length is not None else response.read()
        self._note_created(proxy, response.status, body, payload)
        if lost and not (length and int(length) > 1):
            self.close_connection = True  # carried out, answer lost
            return
        self.send_response_only(response.status, response.reason)
        # A HEAD's Content-Length is the object's size; an answer read whole gets its own.
        whole = length is None and self.command != "HEAD"
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and not (whole and name.lower() == "content-length"):
                self.send_header(name, value)
        if whole:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        remaining = 0 if length is None else int(length) // 2 if lost else int(length)
        while remaining > 0 and (chunk := response.read(min(_CHUNK, remaining))):
            self.wfile.write(chunk)
            remaining -= len(chunk)
        if lost:  # mid-download: half the object's bytes went out
            self.wfile.flush()
            self.close_connection = True

    def _note_created(self, proxy: FaultProxy, status: int, body: bytes, answer: bytes) -> None:
        """Record the object a request made visible: a single PUT's body, or a completed multipart upload's
        object as the server holds it right after (S3 can answer 200 with an error in the body)."""
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        if status != 200 or path.strip("/").count("/") < 1:
            return
        if self.command == "PUT" and "uploadId" not in url.query and "x-amz-copy-source" not in self.headers:
            proxy.record(path, body)
        elif self.command == "POST" and "uploadId" in url.query and b"<Error>" not in answer:
            fetch = http.client.HTTPConnection(*proxy.upstream, timeout=120)
            try:
                fetch.request("GET", url.path)
                proxy.record(path, fetch.getresponse().read())
            finally:
                fetch.close()
