"""Size filter: drop media that is too small, too large, too short, too long or too elongated."""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field, model_validator

from dataprep.stage import Filter, StageParams


class SizeParams(StageParams):
    """Options of `size_filter`; None disables a bound."""

    min_side: int | None = Field(64, gt=0, description="Shorter side at least this many px; below it models learn blur.")
    max_side: int | None = Field(None, gt=0, description="Longer side at most this many px.")
    min_seconds: float | None = Field(1.0, ge=0, description="Videos at least this long (s); shorter ones hold no motion.")
    max_seconds: float | None = Field(None, gt=0, description="Videos at most this long (s).")
    max_aspect: float | None = Field(
        3.0, ge=1, description="Longer side / shorter side at most this; banners and strips are not scenes."
    )

    @model_validator(mode="after")
    def _ordered(self) -> SizeParams:
        if self.min_seconds is not None and self.max_seconds is not None and self.min_seconds > self.max_seconds:
            raise ValueError(f"`min_seconds` ({self.min_seconds}) must be <= `max_seconds` ({self.max_seconds})")
        if self.min_side is not None and self.max_side is not None and self.min_side > self.max_side:
            raise ValueError(f"`min_side` ({self.min_side}) must be <= `max_side` ({self.max_side})")
        return self


class SizeFilter(Filter):
    """Keeps rows whose dimensions and duration are within bounds."""

    name = "size_filter"
    reads = ("width", "height", "duration", "media_type")
    # The measured values the decision was made on (media_type only steers it).
    scores = ("width", "height", "duration")
    Params = SizeParams
    batch_size = 256

    def reasons(self, batch: pa.Table) -> list[str | None]:
        """Check every row against the bounds; the first failed bound is the reason."""
        return [_reason(self.params, w, h, d, kind) for w, h, d, kind in zip(
            batch.column("width").to_pylist(), batch.column("height").to_pylist(),
            batch.column("duration").to_pylist(), batch.column("media_type").to_pylist(), strict=True)]


def _reason(p: SizeParams, w: int | None, h: int | None, d: float | None, kind: str | None) -> str | None:
    if w is None or h is None:
        return "size:unknown_dimensions"
    short, long_ = min(w, h), max(w, h)
    if p.min_side is not None and short < p.min_side:
        return f"size:min_side: shorter side {short}px < {p.min_side}px"
    if p.max_side is not None and long_ > p.max_side:
        return f"size:max_side: longer side {long_}px > {p.max_side}px"
    if p.max_aspect is not None and long_ / short > p.max_aspect:
        return f"size:max_aspect: aspect {long_ / short:.2f} > {p.max_aspect}"
    if kind == "video":
        if d is None:
            return "size:unknown_duration"
        if p.min_seconds is not None and d < p.min_seconds:
            return f"size:min_seconds: duration {d:.2f}s < {p.min_seconds}s"
        if p.max_seconds is not None and d > p.max_seconds:
            return f"size:max_seconds: duration {d:.2f}s > {p.max_seconds}s"
    return None
