"""The HTTP backend: an OpenAI-compatible `/chat/completions` server (`vllm serve`, SGLang) asked concurrently.

Each row is one request with its pictures inline as `image_url` data URIs. At most `max_in_flight`
requests are in flight per worker (a thread pool). A 408, 429, 5xx, timeout, broken connection or
unparseable answer is retried with exponential backoff and jitter (a 429's Retry-After is honoured);
when the retries run out the row falls back to its original caption. A 401, 403 or 404 means the
key, the endpoint or the model name is wrong for every row: the job fails with `VlmConfigError`.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dataprep.stages.models.vlm_backend import Generation, VlmConfigError
from dataprep.stages.models.vlm_prompt import VlmRequest, openai_messages

log = logging.getLogger(__name__)

# Statuses worth asking again: request timeout, rate limit, and server-side failures.
_RETRYABLE = {408, 429, 500, 502, 503, 504}
# Statuses that mean the configuration is wrong for every request.
_CONFIG = {401: "the API key was refused", 403: "the API key may not use this model",
           404: "the endpoint or the model name is unknown to the server"}
# Longest wait between two tries (s), whatever the backoff or a Retry-After asks.
_BACKOFF_CAP_S = 30.0
# Seconds the preflight waits for the server's model list.
_PREFLIGHT_TIMEOUT_S = 5.0


class HttpBackend:
    """Sends each request to `{endpoint}/chat/completions`, `max_in_flight` at a time."""

    def __init__(
        self, *, endpoint: str, model: str, api_key: str | None, body: dict[str, Any], max_in_flight: int,
        timeout_s: float, max_retries: int, backoff_s: float,
        sleep: Callable[[float], None] = time.sleep, jitter: Callable[[], float] = random.random,
    ) -> None:
        self.url = endpoint.rstrip("/") + "/chat/completions"
        self.model = model
        self.headers = {"Content-Type": "application/json", **_auth(api_key)}
        self.body = body
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.jitter = jitter
        self.pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="vlm-http")

    def generate(self, requests: list[VlmRequest]) -> list[Generation]:
        """Every request's answer; a `VlmConfigError` from any of them cancels the rest and is raised."""
        futures = [self.pool.submit(self._ask, r) for r in requests]
        try:
            return [f.result() for f in futures]
        except VlmConfigError:
            for f in futures:
                f.cancel()
            raise

    def close(self) -> None:
        """Stop the threads once their requests finish."""
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _ask(self, request: VlmRequest) -> Generation:
        """One request, tried up to 1 + `max_retries` times."""
        data = json.dumps({"model": self.model, "messages": openai_messages(request), **self.body}).encode("utf-8")
        failure, retry_after = "", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = self._delay(attempt, retry_after)
                log.debug("vlm http: %s; retry %d of %d in %.1f s", failure, attempt, self.max_retries, delay)
                self.sleep(delay)
                retry_after = None
            try:
                status, headers, payload = self._post(data)
            except (TimeoutError, OSError, http.client.HTTPException) as exc:
                failure = _transport_failure(exc)
                continue
            if status == 200:
                generation = _parse(payload)
                if generation is not None:
                    return generation
                failure = "malformed_response"
                continue
            message = _error_message(payload)
            if status in _CONFIG:
                raise VlmConfigError(f"{self.url} answered {status} for model {self.model!r}: {_CONFIG[status]} "
                                     f"({message}); fix: check `endpoint`, `model` and the key in `api_key_env`")
            failure = f"http_{status}"
            if status not in _RETRYABLE:
                return Generation(text=None, failure=f"{failure}: {message}"[:300])
            retry_after = _seconds(headers.get("Retry-After"))
        return Generation(text=None, failure=f"{failure} after {self.max_retries + 1} tries")

    def _post(self, data: bytes) -> tuple[int, Any, bytes]:
        """(status, headers, body) of one POST; raises on a timeout or a connection failure."""
        req = urllib.request.Request(self.url, data=data, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.headers, exc.read()

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before try `attempt` (1, 2, ...): doubling from `backoff_s`, half of it random, capped."""
        base = min(_BACKOFF_CAP_S, self.backoff_s * 2 ** (attempt - 1))
        # Random half: workers that failed together (a server restart) do not all come back at once.
        delay = base / 2 + self.jitter() * base / 2
        return min(_BACKOFF_CAP_S, max(delay, retry_after or 0.0))


def endpoint_problem(endpoint: str, model: str, *, api_key: str | None) -> str | None:
    """Why the server at `endpoint` cannot caption with `model` (unreachable, key refused, model not served)."""
    url = endpoint.rstrip("/") + "/models"
    req = urllib.request.Request(url, headers=_auth(api_key))
    fix = "fix: start the server (e.g. `vllm serve MODEL`) or set `endpoint`"
    try:
        with urllib.request.urlopen(req, timeout=_PREFLIGHT_TIMEOUT_S) as resp:
            served = [m.get("id") for m in json.loads(resp.read()).get("data", [])]
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return f"`endpoint`: {url} refused the API key ({exc.code}); fix: set the key in `api_key_env`'s variable"
        return None  # a server without a model list can still caption; the first request will tell
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return f"`endpoint`: cannot reach {url} ({type(exc).__name__}: {exc}); {fix}"
    if served and model not in served:
        return f"`model`: {model!r} is not served at {endpoint} (it serves {served}); fix: set `model` to one of them"
    return None


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _parse(payload: bytes) -> Generation | None:
    """The answer in a chat-completions response, or None when it is not one."""
    try:
        body = json.loads(payload)
        message = body["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # some servers answer in parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    usage = body.get("usage") or {}
    text = content.strip() if isinstance(content, str) else ""
    return Generation(text=text, prompt_tokens=usage.get("prompt_tokens"), output_tokens=usage.get("completion_tokens"),
                      failure=None if text else "empty")


def _error_message(payload: bytes) -> str:
    """The server's error message (OpenAI's `{"error": {"message": ...}}`), else the start of the body."""
    try:
        error = json.loads(payload).get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        message = None
    return " ".join(str(message or payload[:200].decode("utf-8", "replace")).split())


def _seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds (the HTTP-date form is rare from model servers and is ignored)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _transport_failure(exc: BaseException) -> str:
    """`timeout`, or `connection: <cause>` (urllib wraps the socket's error as the `reason` of a URLError)."""
    cause = exc.reason if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException) else exc
    return "timeout" if isinstance(cause, TimeoutError) else f"connection: {type(cause).__name__}"
