"""Scene split: one row per shot of each video, found by content cuts.

    stages:
      - stage: scene_split
        threshold: 27        # higher finds fewer cuts
        fades: false         # true also splits at fades through black

Each video row becomes one row per scene, keyed `child_key(key, i)`, with
`parent_key` naming the video. Hard cuts are found from the HSV difference of
consecutive downscaled frames (see `dataprep.stages.video.cuts`). Fades are gradual, so by
default the ramp stays inside its scene; only the step into pure black and out of it
may read as cuts (the last faint pixels carry full saturation), which leaves the
black run as a short scene of its own that `standardize` drops by `min_seconds`.
With `fades: true` every run of frames darker than `fade_threshold` is removed and
the scene splits there. Dissolves (cross-fades) are not split unless one step of
the blend passes `threshold`.
Image rows and rows already rejected pass through unchanged.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from dataprep import columns, storage
from dataprep.errors import row_error
from dataprep.stage import Resources, Stage
from dataprep.stages.video.cuts import CutSettings, Scene, detect_scenes
from dataprep.stages.video.table import put, rejects

log = logging.getLogger(__name__)

SCENE_FIELDS = pa.schema(
    [
        ("scene_start", pa.float64()),
        ("scene_end", pa.float64()),
        ("scene_start_frame", pa.int64()),
        ("scene_end_frame", pa.int64()),
    ]
)


class SceneSplitParams(BaseModel):
    """Options of `scene_split`."""

    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(
        27.0,
        gt=0,
        le=255,
        description="Mean HSV difference (0-255) between consecutive frames that counts as a cut; "
        "27 is PySceneDetect's ContentDetector default, which gives F1 1.0 on the test videos.",
    )
    min_scene_frames: int = Field(
        15,
        ge=1,
        description="Frames a scene must last before another cut is accepted (frames); "
        "15 (half a second at 30 fps) keeps camera flashes from splitting a shot.",
    )
    analysis_width: int = Field(
        128,
        ge=16,
        le=1920,
        description="Width the frames are scaled to before comparison (px); 128 is as accurate as "
        "256 on the test videos and keeps memory per frame at ~40 KB.",
    )
    fades: bool = Field(
        False,
        description="Also split at fades through black, dropping the black frames (bool); off by default "
        "because a fade inside a shot is usually an edit, not a new scene.",
    )
    fade_threshold: float = Field(
        12.0,
        ge=0,
        le=255,
        description="Mean brightness (HSV value, 0-255) under which a frame is black, for `fades` ; "
        "12 is PySceneDetect's ThresholdDetector default.",
    )
    max_corrupt_packets: int = Field(
        0,
        ge=0,
        description="Packets that may fail to decode before the video is rejected (count); 0 because a "
        "corrupt packet becomes a smeared frame in the clip, which a model would learn.",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="Decoder threads per video (count); None uses the CPUs given to the stage, "
        "so parallel workers do not oversubscribe the cores.",
    )


class SceneSplit(Stage):
    """Splits each video row into one row per scene with its start and end in seconds and frames."""

    name = "scene_split"
    reads = (columns.KEY, columns.SOURCE, "media_type")
    writes = (columns.KEY, columns.PARENT, *SCENE_FIELDS.names)
    Params = SceneSplitParams
    resources: ClassVar[Resources] = Resources(cpus=1.0)
    batch_size = 4
    expands = True

    def _settings(self) -> CutSettings:
        p = self.params
        threads = self.worker_threads(p.threads)
        return CutSettings(p.threshold, p.min_scene_frames, p.analysis_width, p.fades, p.fade_threshold, threads,
                           p.max_corrupt_packets)

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """One output row per scene of each video; other rows pass through once."""
        settings = self._settings()
        reasons = rejects(batch)
        keys = batch.column(columns.KEY).to_pylist()
        sources = batch.column(columns.SOURCE).to_pylist()
        kinds = batch.column("media_type").to_pylist()
        take: list[int] = []
        out: dict[str, list[Any]] = {name: [] for name in (columns.KEY, columns.PARENT, columns.REJECT, *SCENE_FIELDS.names)}
        parents = batch.column(columns.PARENT).to_pylist() if columns.PARENT in batch.column_names else [None] * len(keys)
        for i, (key, uri, kind, reason) in enumerate(zip(keys, sources, kinds, reasons, strict=True)):
            scenes: list[Scene] = []
            if reason is None and kind == "video":
                try:
                    with storage.open_local(uri) as path:
                        scenes = detect_scenes(path, settings)
                except Exception as exc:  # a broken file is this row's failure, not the job's
                    reason = row_error(exc)
                    log.info("scene_split: %s rejected: %s", key, reason)
            if not scenes:
                take.append(i)
                _append(out, key, parents[i], reason, None)
                continue
            for j, scene in enumerate(scenes):
                take.append(i)
                _append(out, columns.child_key(key, j), key, None, scene)
        table = batch.take(pa.array(take, type=pa.int64()))
        table = put(table, columns.KEY, out[columns.KEY], pa.string())
        table = put(table, columns.PARENT, out[columns.PARENT], pa.string())
        for field in SCENE_FIELDS:
            table = put(table, field.name, out[field.name], field.type)
        return put(table, columns.REJECT, out[columns.REJECT], pa.string())


def _append(out: dict[str, list[Any]], key: str, parent: str | None, reason: str | None, scene: Scene | None) -> None:
    out[columns.KEY].append(key)
    out[columns.PARENT].append(parent)
    out[columns.REJECT].append(reason)
    out["scene_start"].append(scene.start if scene else None)
    out["scene_end"].append(scene.end if scene else None)
    out["scene_start_frame"].append(scene.start_frame if scene else None)
    out["scene_end_frame"].append(scene.end_frame if scene else None)
