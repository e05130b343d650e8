"""Size filter: each bound, its reason, and option validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dataprep.stages.quality.size import SizeFilter, SizeParams


def _decide(rows, **params):
    """(kept per row, reasons) as the runner derives them from `reasons`."""
    import pyarrow as pa

    reasons = SizeFilter(SizeParams(**params)).reasons(pa.Table.from_pylist(rows))
    return [r is None for r in reasons], reasons


def _row(w, h, d=None, kind="video"):
    return {"width": w, "height": h, "duration": d, "media_type": kind}


def test_each_bound_has_its_reason():
    rows = [_row(320, 240, 5.0), _row(32, 240, 5.0), _row(320, 240, 0.5), _row(960, 160, 5.0),
            _row(320, 240, None), _row(1000, 100, kind="image"), _row(None, None)]
    mask, reasons = _decide(rows, max_seconds=10)
    assert mask == [True, False, False, False, False, False, False]
    assert reasons[1].startswith("size:min_side") and reasons[2].startswith("size:min_seconds")
    assert reasons[3].startswith("size:max_aspect") and reasons[4] == "size:unknown_duration"
    assert reasons[5].startswith("size:max_aspect") and reasons[6] == "size:unknown_dimensions"


def test_images_ignore_duration_bounds():
    mask, _ = _decide([_row(640, 480, None, kind="image")], min_seconds=2)
    assert mask == [True]


def test_bounds_can_be_disabled():
    mask, _ = _decide([_row(10, 1000, 0.1)], min_side=None, min_seconds=None, max_aspect=None)
    assert mask == [True]


def test_bad_options_fail_with_names():
    with pytest.raises(ValidationError, match="min_seconds"):
        SizeParams(min_seconds=10, max_seconds=5)
    with pytest.raises(ValidationError, match="min_side"):
        SizeParams(min_side=0)


def test_a_dropped_row_records_its_measurements_not_its_kind():
    assert SizeFilter.score_columns() == ("width", "height", "duration")
