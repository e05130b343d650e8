"""Clip planning and geometry: pure arithmetic, no media."""

from __future__ import annotations

from fractions import Fraction

import pytest

from dataprep.stages.video.plan import (
    ClipRejected,
    Geometry,
    frames_in,
    nearest_bucket,
    plan_clips,
    scale_filters,
    upscale_factor,
)

F24 = Fraction(24)


def _plan(start: float, end: float, policy: str = "split", lo: float = 2.0, hi: float | None = 5.0) -> list[tuple]:
    return [(c.start, c.end, c.frames, c.index) for c in
            plan_clips(start, end, fps=F24, min_seconds=lo, max_seconds=hi, long_policy=policy)]


def test_split_makes_full_chunks_and_keeps_a_long_enough_rest() -> None:
    assert _plan(1.0, 13.5) == [(1.0, 6.0, 120, 0), (6.0, 11.0, 120, 1), (11.0, 13.5, 60, 2)]
    assert _plan(0.0, 11.0) == [(0.0, 5.0, 120, 0), (5.0, 10.0, 120, 1)]  # 1 s rest < 2 s min


def test_a_scene_within_one_frame_of_the_max_is_one_clip() -> None:
    assert _plan(0.0, 5.02) == [(0.0, 5.0, 120, None)]


def test_truncate_drop_and_too_short() -> None:
    assert _plan(2.0, 30.0, "truncate") == [(2.0, 7.0, 120, None)]
    with pytest.raises(ClipRejected, match="too_long: 28.000s > max_seconds 5.0s"):
        _plan(2.0, 30.0, "drop")
    with pytest.raises(ClipRejected, match="too_short: 1.500s < min_seconds 2.0s"):
        _plan(0.0, 1.5)
    assert _plan(0.0, 100.0, hi=None) == [(0.0, 100.0, 2400, None)]


def test_frames_round_down_to_whole_frames() -> None:
    assert frames_in(2.002, Fraction(24)) == 48
    assert frames_in(1.0, Fraction(30000, 1001)) == 29
    assert frames_in(0.001, F24) == 1


def test_nearest_bucket_by_log_aspect() -> None:
    buckets = [(640, 360), (360, 640), (480, 480)]
    assert nearest_bucket(1920, 1080, buckets) == (640, 360)
    assert nearest_bucket(1080, 1920, buckets) == (360, 640)
    assert nearest_bucket(1000, 900, buckets) == (480, 480)
    assert nearest_bucket(4000, 1000, buckets) == (640, 360)


def test_upscale_factor_depends_on_the_mode() -> None:
    assert upscale_factor(320, 180, Geometry(640, 640, "crop")) == pytest.approx(640 / 180)
    assert upscale_factor(320, 180, Geometry(640, 640, "pad")) == pytest.approx(2.0)


def test_scale_filters_end_at_the_exact_size() -> None:
    assert scale_filters(Geometry(64, 48, "crop"))[-1] == "crop=64:48"
    assert scale_filters(Geometry(64, 48, "pad"))[-1].startswith("pad=64:48")
    assert scale_filters(Geometry(64, 48, "fit"))[-1] == "setsar=1"
