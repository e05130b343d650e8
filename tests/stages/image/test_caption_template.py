"""caption_template: one templated caption per row; a caption the row had is kept in caption_original."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pydantic import ValidationError

from dataprep.stages.image.caption_template import CaptionTemplate


def test_instance_and_class_captions_keep_the_original():
    batch = pa.table({"key": ["a", "b", "c"], "caption": ["me at the beach", None, "  "]})
    out = CaptionTemplate(token="ohwx", class_name="woman").process_batch(batch)
    assert out.column("caption").to_pylist() == ["a photo of ohwx woman"] * 3
    assert out.column("caption_original").to_pylist() == ["me at the beach", None, None]
    prior = CaptionTemplate(template="a photo of a {class_name}", token=None).process_batch(pa.table({"key": ["a"]}))
    assert prior.column("caption").to_pylist() == ["a photo of a person"]
    assert prior.column("caption_original").to_pylist() == [None]


def test_templates_are_checked_when_the_config_is_read():
    with pytest.raises(ValidationError, match=r"may only name \{token\} and \{class_name\}"):
        CaptionTemplate(template="a photo of {name}")
    with pytest.raises(ValidationError, match="`token` is empty"):
        CaptionTemplate(token=" ")
    with pytest.raises(ValidationError, match="not a valid template"):
        CaptionTemplate(template="a photo of {token")
