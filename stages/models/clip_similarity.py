"""Caption-media agreement: the cosine between a row's CLIP embedding and its caption's.

    stages:
      - stage: clip_embed
        model: &clip timm/vit_large_patch14_clip_224.openai
      - stage: clip_similarity_filter
        model: *clip          # must be clip_embed's model: the two embeddings share one space only then
        min_similarity: 0.2

The filter loads the same CLIP for its text tower, embeds `caption` and scores
`clip_similarity` = cos(image, text) against `clip_embedding`. A row without a caption is
kept with a null score: there is nothing to disagree with, and an uncaptioned image is what
a later captioning stage is for; dropping it here would lose it before it gets a caption.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from dataprep import arrow, columns
from dataprep.stage import Filter, Resources, StageParams
from dataprep.stages.models.clip import EMBEDDING, ClipParams, EmbeddingMismatchError, check_width, \
    clip_model_field, embedding_matrix, load_clip, missing_embedding
from dataprep.stages.models.load import ModelStage

SCORE = "clip_similarity"


class ClipSimilarityParams(ClipParams):
    """Options of `clip_similarity_filter`."""

    model: str = clip_model_field(
        "The open_clip model clip_embed ran (the same name): only its text tower shares the space of "
        "`clip_embedding`. Hub repo id or local folder with open_clip_config.json and weights.")
    min_similarity: float | None = Field(
        0.2, ge=-1, le=1, description="Keep rows whose caption-media cosine is at least this (-1..1). The scale "
        "depends on the model: LAION-400M kept >= 0.3 and LAION-5B >= 0.28 with OpenAI ViT-B/32; ViT-L/14 scores "
        "run lower, so 0.2 drops only clear mismatches. None: score only.")


class ClipSimilarityFilter(ModelStage, Filter):
    """Adds `clip_similarity` between caption and media; drops rows below `min_similarity`."""

    name = "clip_similarity_filter"
    reads = (columns.CAPTION, EMBEDDING)
    writes = (SCORE,)
    Params = ClipSimilarityParams
    fatal: ClassVar[tuple[Any, ...]] = (*ModelStage.fatal, EmbeddingMismatchError)
    resources: ClassVar[Resources] = Resources(cpus=1.0)
    # Captions per text forward pass: cheap next to images (77 tokens each).
    batch_size = 256

    def setup(self) -> None:
        """Load the model once per worker."""
        self.clip = load_clip(self.params, self.worker_threads())

    def tiny_params(self, cache_dir: str) -> StageParams:
        """Tiny random CLIP, and no threshold: its similarities are noise, so a tiny run records them and drops
        nothing, and the stages after it still get rows."""
        return super().tiny_params(cache_dir).model_copy(update={"min_similarity": None})

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Embed every non-empty caption of the batch at once and score it against its row's embedding."""
        import numpy as np

        image, present = embedding_matrix(batch)
        if any(present):
            check_width(image.shape[1], self.clip.dim, f"{self.name}'s model {self.params.model!r}",
                        "give clip_similarity_filter the same `model` as clip_embed")
        captions = [(c or "").strip() for c in batch.column(columns.CAPTION).to_pylist()]
        rows = [i for i, (c, ok) in enumerate(zip(captions, present, strict=True)) if c and ok]
        scores = np.zeros(batch.num_rows, np.float32)
        scored = np.zeros(batch.num_rows, bool)
        if rows:
            text = self.clip.embed_texts([captions[i] for i in rows])  # (len(rows), D), unit rows
            scores[rows] = (image[rows] * text).sum(axis=1)
            scored[rows] = True
        return arrow.put(batch, SCORE, pa.array(scores, pa.float32(), mask=~scored), pa.float32())

    def reasons(self, batch: pa.Table) -> list[str | None]:
        """Below `min_similarity` drops a row; a row without a caption stays, one without an embedding does not."""
        low = self.params.min_similarity
        embedded = batch.column(EMBEDDING).is_valid().to_pylist()
        return [missing_embedding("clip_similarity") if not ok else
                f"clip_similarity:low: cosine {s:.3f} < {low}" if s is not None and low is not None and s < low
                else None for s, ok in zip(batch.column(SCORE).to_pylist(), embedded, strict=True)]
