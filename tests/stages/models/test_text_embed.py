"""text_embed: float16 per-token states padded to a fixed length with true token counts, per caption column and
encoder, computed with a tiny random T5 (tokenizer trained offline) and a tiny open_clip."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from dataprep.members import SampleLayout, declared_members, to_ndarray
from dataprep.stages.models.load import build_tiny, load_model
from dataprep.stages.models.text_encoders import TextEmbed

MAX_TOKENS = 16
LONG = "the camera pans across a green field with cows and a blue sky " * 4  # > 16 tokens
CAPTIONS = ["a red car", "a red car at night", LONG]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_text")
    return lambda kind, name: build_tiny(kind, name, folder)


@pytest.fixture(scope="module")
def t5_path(tiny) -> str:
    return tiny("t5", "google/umt5-xxl")


@pytest.fixture(scope="module")
def stage(t5_path) -> TextEmbed:
    s = TextEmbed(t5_model=t5_path, max_tokens=MAX_TOKENS, device="cpu")
    s.setup()
    return s


def table(**cols) -> pa.Table:
    n = len(next(iter(cols.values())))
    return pa.table({"key": [f"k{i}" for i in range(n)], **{c: pa.array(v, pa.string()) for c, v in cols.items()}})


def rows_of(out: pa.Table, column: str) -> list[np.ndarray | None]:
    array = out.column(column).combine_chunks()
    return [to_ndarray(array, i) for i in range(out.num_rows)]


def test_embedding_is_float16_max_tokens_by_dim_with_true_token_counts(stage):
    out = stage.process_batch(table(caption=CAPTIONS))
    tokenizer = stage.models["t5"].tokenizer
    full = [len(tokenizer(c)["input_ids"]) for c in CAPTIONS]  # untruncated, with </s>
    assert full[2] > MAX_TOKENS > max(full[:2])
    embeddings = rows_of(out, "t5_embedding")
    assert all(e.dtype == np.float16 and e.shape == (MAX_TOKENS, 32) for e in embeddings)  # tiny T5: d_model 32
    assert out.column("t5_tokens").to_pylist() == [full[0], full[1], MAX_TOKENS]
    assert out.column("t5_truncated").to_pylist() == [0, 0, full[2] - MAX_TOKENS]
    for e, n in zip(embeddings, out.column("t5_tokens").to_pylist(), strict=True):
        # Real tokens carry states; the padding after them is zeros, so a mask of `t5_tokens` loses nothing.
        assert np.all(np.abs(e[:n]).sum(axis=1) > 0) and not e[n:].any()


def test_padding_is_masked_so_its_length_does_not_change_the_real_tokens(stage, t5_path):
    longer = TextEmbed(t5_model=t5_path, max_tokens=2 * MAX_TOKENS, device="cpu")
    longer.setup()
    short, long_ = (rows_of(s.process_batch(table(caption=CAPTIONS[:1])), "t5_embedding")[0] for s in (stage, longer))
    n = stage.process_batch(table(caption=CAPTIONS[:1])).column("t5_tokens")[0].as_py()
    assert long_.shape == (2 * MAX_TOKENS, 32)
    np.testing.assert_allclose(short[:n].astype(np.float32), long_[:n].astype(np.float32), atol=1e-3)


def test_a_caption_gets_the_same_embedding_alone_or_in_any_batch(stage):
    batch = stage.process_batch(table(caption=[*CAPTIONS, CAPTIONS[1]]))
    alone = stage.process_batch(table(caption=[CAPTIONS[1]]))
    in_batch = rows_of(batch, "t5_embedding")
    np.testing.assert_array_equal(in_batch[1], in_batch[3])
    np.testing.assert_array_equal(in_batch[1], rows_of(alone, "t5_embedding")[0])
    assert not np.array_equal(in_batch[0], in_batch[1])


def test_each_caption_column_gets_its_columns_and_a_null_caption_is_rejected(t5_path):
    s = TextEmbed(t5_model=t5_path, columns=["caption", "caption_vlm"], max_tokens=MAX_TOKENS, device="cpu")
    assert s.reads == ("key", "caption", "caption_vlm")
    assert s.writes == ("t5_embedding", "t5_tokens", "t5_truncated",
                        "t5_embedding_vlm", "t5_tokens_vlm", "t5_truncated_vlm")
    s.setup()
    out = s.process_batch(table(caption=["a red car", None], caption_vlm=["a red car at night", "two dogs"]))
    reasons = out.column("_reject").to_pylist()
    assert reasons[0] is None and reasons[1].startswith("text_embed:no_caption: column 'caption'")
    assert rows_of(out, "t5_embedding")[1] is None and rows_of(out, "t5_embedding_vlm")[1].shape == (MAX_TOKENS, 32)
    # In the shard: `KEY.t5_embedding.npy`, the member dataprep.loader reads, and the counts in KEY.json.
    layout = SampleLayout(out.schema, declared_members([s]))
    files = layout.encode(out)[0]
    np.testing.assert_array_equal(np.load(io.BytesIO(files["t5_embedding.npy"])), rows_of(out, "t5_embedding")[0])
    assert "t5_tokens" in layout.meta and "t5_truncated_vlm" in layout.manifest


def test_t5_family_follows_the_real_name_and_loads_from_a_pipeline_folder(tiny, t5_path, tmp_path):
    assert type(load_model("t5", t5_path).model).__name__ == "UMT5EncoderModel"
    t5 = tiny("t5", "google/t5-v1_1-xxl")
    assert type(load_model("t5", t5).model).__name__ == "T5EncoderModel"
    pipeline = tmp_path / "pipeline"
    shutil.copytree(t5, pipeline / "text_encoder")
    shutil.copytree(t5, pipeline / "tokenizer")
    (pipeline / "model_index.json").write_text(json.dumps({"_class_name": "CogVideoXPipeline"}))
    s = TextEmbed(t5_model=str(pipeline), max_tokens=8, device="cpu")
    s.setup()
    assert type(s.models["t5"].model).__name__ == "T5EncoderModel"
    assert rows_of(s.process_batch(table(caption=["a red car"])), "t5_embedding")[0].shape == (8, 32)


def test_clip_text_states_are_context_length_by_width(tiny):
    s = TextEmbed(t5_model=None, clip_model=tiny("open_clip", "timm/vit_large_patch14_clip_224.openai"),
                  device="cpu")
    assert s.writes == ("clip_text_embedding", "clip_text_tokens", "clip_text_truncated")
    s.setup()
    out = s.process_batch(table(caption=["a red car", "word " * 100]))
    embeddings = rows_of(out, "clip_text_embedding")
    assert all(e.dtype == np.float16 and e.shape == (77, 32) for e in embeddings)  # tiny CLIP: width 32
    # open_clip's BPE: start, "a", "red", "car", end; 100 words + start and end cut to 77.
    assert out.column("clip_text_tokens").to_pylist() == [5, 77]
    assert out.column("clip_text_truncated").to_pylist() == [0, 102 - 77]


def test_options_are_checked():
    with pytest.raises(ValidationError, match="`t5_model` or `clip_model`"):
        TextEmbed(t5_model=None)
    with pytest.raises(ValidationError, match="lower-case column names"):
        TextEmbed(columns=["Caption"])
    with pytest.raises(ValidationError, match="same embedding column twice"):
        TextEmbed(columns=["caption_vlm", "vlm"])


def test_missing_model_fails_preflight_naming_it_and_the_fix():
    problems = TextEmbed(t5_model="/nowhere/umt5-xxl").preflight()
    assert len(problems) == 1 and "/nowhere/umt5-xxl" in problems[0] and "--tiny-models" in problems[0]
