"""What every captioning backend (transformers, vLLM, HTTP) gives back, and the one method it implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from dataprep.stages.models.vlm_prompt import VlmRequest


@dataclass(frozen=True)
class Generation:
    """One request's answer: the text (None when it failed), its token counts, and why it failed."""

    text: str | None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    # `code` or `code: detail` (`http_503: after 5 tries`), set when there is no usable text.
    failure: str | None = None


class VlmConfigError(RuntimeError):
    """The backend cannot work at all (wrong API key, unknown model): the job fails instead of every row."""


class Backend(Protocol):
    """Generates captions for a batch of requests, one `Generation` per request, in order."""

    def generate(self, requests: list[VlmRequest]) -> list[Generation]:
        """Answer every request; one that fails alone gets a `Generation` with `failure` set.

        An exception means the whole batch failed; the stage then asks again one request at a time.
        """
        ...

    def close(self) -> None:
        """Release the model, the GPU memory or the connection pool."""
        ...
