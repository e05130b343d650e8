"""`minhash_dedup` options: validation errors that name the option and the fix."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dataprep.stages.dedup.stage import MinHashDedup


@pytest.mark.parametrize(("opts", "message"), [
    ({"threshold": 1.5}, "`threshold` must be in (0, 1), got 1.5"),
    ({"visual_threshold": 0}, "`visual_threshold` must be in (0, 1), got 0"),
    ({"frame_match": 0}, "`frame_match` must be in (0, 1], got 0"),
    ({"ngram": 9}, "`ngram` must be in [1, 8], got 9"),
    ({"num_perm": 0}, "`num_perm` must be >= 1, got 0"),
    ({"bands": 4}, "give both `bands` and `rows` or neither"),
    ({"bands": 20, "rows": 7}, "`bands` x `rows` must be >= 1 and <= num_perm (128), got 20 x 7"),
    ({"keep": "score"}, "keep=score needs `score_column`"),
    ({"thresold": 0.5}, "Extra inputs are not permitted"),
])
def test_bad_options_fail_at_construction(opts, message):
    with pytest.raises(ValidationError) as err:
        MinHashDedup.Params(**opts)
    assert message in str(err.value)


def test_every_option_is_documented():
    for name, field in MinHashDedup.Params.model_fields.items():
        assert field.description and len(field.description) > 20, name


def test_reads_follow_the_mode_and_policy():
    assert MinHashDedup.reads == ("key", "caption")  # the plan check sees these; instances add more
    text = MinHashDedup(MinHashDedup.Params(mode="text", keep="duration"))
    assert text.reads == ("key", "caption", "duration")
    both = MinHashDedup(MinHashDedup.Params(keep="score", score_column="aesthetic"))
    assert both.reads == ("key", "caption", "frames", "aesthetic")
    assert MinHashDedup.name == "minhash_dedup"
