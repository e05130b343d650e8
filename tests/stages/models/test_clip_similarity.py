"""clip_similarity_filter: the cosine between a caption's CLIP text embedding and the row's `clip_embedding`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from dataprep import columns
from dataprep.stages.models.clip import EMBEDDING, TINY_EMBED_DIM, ClipEmbed, EmbeddingMismatchError
from dataprep.stages.models.clip_similarity import SCORE, ClipSimilarityFilter
from dataprep.stages.models.load import build_tiny
from tests.stages.models.test_clip import COLOURS, frames_table, jpeg

CAPTIONS = ["a red square on a white wall", "green", "a blue thing", "yellow yellow yellow"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    return build_tiny("open_clip", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def embedded(tiny_clip) -> pa.Table:
    """Four images with their captions and clip_embed's embeddings."""
    embed = ClipEmbed(model=tiny_clip, device="cpu")
    embed.setup()
    table = embed.process_batch(frames_table([[jpeg(c)] for c in COLOURS]))
    return table.drop_columns([c for c in (columns.REJECT, "frames") if c in table.column_names]) \
        .append_column(columns.CAPTION, pa.array(CAPTIONS))


@pytest.fixture(scope="module")
def stage(tiny_clip) -> ClipSimilarityFilter:
    stage = ClipSimilarityFilter(model=tiny_clip, device="cpu")
    stage.setup()
    return stage


def with_captions(table: pa.Table, captions: list[str | None]) -> pa.Table:
    return table.set_column(table.schema.get_field_index(columns.CAPTION), columns.CAPTION, pa.array(captions))


def test_score_is_the_cosine_with_the_caption_text_embedding_of_the_same_model(stage, embedded):
    import torch

    scores = stage.process_batch(embedded).column(SCORE).to_pylist()
    # The text side computed here straight from open_clip, not through the stage.
    model, tokenizer = stage.clip.model, stage.clip.tokenizer
    with torch.no_grad():
        text = model.encode_text(tokenizer(CAPTIONS)).numpy()
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    image = np.asarray(embedded.column(EMBEDDING).to_pylist(), np.float32)
    np.testing.assert_allclose(scores, (image * text).sum(axis=1), atol=1e-5)
    assert all(-1.0 <= s <= 1.0 for s in scores)


def test_a_batch_scores_each_row_as_alone(stage, embedded):
    batched = stage.process_batch(embedded).column(SCORE).to_pylist()
    alone = [stage.process_batch(embedded.slice(i, 1)).column(SCORE)[0].as_py() for i in range(embedded.num_rows)]
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_rows_without_a_caption_are_kept_with_a_null_score(stage, embedded):
    out = stage.process_batch(with_captions(embedded, [None, "", "   ", CAPTIONS[3]]))
    scores = out.column(SCORE).to_pylist()
    assert scores[:3] == [None, None, None] and scores[3] is not None
    strict = ClipSimilarityFilter(stage.params.model_copy(update={"min_similarity": 1.0}))
    assert strict.reasons(out)[:3] == [None, None, None]


def test_below_min_similarity_drops_the_row():
    table = pa.table({SCORE: pa.array([0.1, 0.3, None, 0.2], pa.float32()),
                      EMBEDDING: pa.array([[1.0, 0.0]] * 4, pa.list_(pa.float32(), 2))})
    reasons = ClipSimilarityFilter(model="/m", min_similarity=0.2).reasons(table)
    assert reasons[0] == "clip_similarity:low: cosine 0.100 < 0.2"
    assert reasons[1:] == [None, None, None]
    assert ClipSimilarityFilter(model="/m", min_similarity=None).reasons(table) == [None] * 4


def test_row_without_embedding_is_rejected(stage):
    table = pa.table({columns.CAPTION: ["a cat", "a dog"],
                      EMBEDDING: pa.array([[1.0] + [0.0] * (TINY_EMBED_DIM - 1), None],
                                          pa.list_(pa.float32(), TINY_EMBED_DIM))})
    out = stage.process_batch(table)
    reasons = stage.reasons(out)
    assert reasons[1].startswith("clip_similarity:no_embedding: ") and out.column(SCORE)[1].as_py() is None
    assert out.column(SCORE)[0].as_py() is not None


def test_embedding_from_another_model_is_a_fatal_error(stage):
    table = pa.table({columns.CAPTION: ["a cat"], EMBEDDING: pa.array([[1.0] * 16], pa.list_(pa.float32(), 16))})
    with pytest.raises(EmbeddingMismatchError, match=f"16-d .* {TINY_EMBED_DIM}-d"):
        stage.process_batch(table)
    assert stage.is_fatal(EmbeddingMismatchError("x"))


def test_tiny_run_records_similarity_and_drops_nothing(tmp_path):
    params = ClipSimilarityFilter().tiny_params(str(tmp_path))
    assert params.min_similarity is None and Path(params.model).parent == tmp_path
