"""nsfw_filter: real photos and videos pass at the default threshold; bad frames reject rows, not the job."""

from __future__ import annotations

import pyarrow as pa
import pytest

from dataprep.stages.safety.nsfw import NsfwFilter
from dataprep.stages.video.frames import FrameSample, FrameSampleParams
from tests.stages.video.video_media import describe

# Decodable real media only: the corrupt and duration-less files are rejected earlier, by probe.
_SKIP_VIDEOS = {"decord_corrupted.mp4", "moviepy_no_duration.webm"}


@pytest.fixture(scope="module")
def nsfw() -> NsfwFilter:
    stage = NsfwFilter()
    stage.setup()
    return stage


def _real_frames(shared_data) -> pa.Table:
    """Four thumbnails of every real video and one of every real photo, as frame_sample makes them."""
    rows = [{**describe(p, p.stem), "media_type": "video"}
            for p in sorted((shared_data / "videos").iterdir()) if p.name not in _SKIP_VIDEOS]
    rows += [{"key": p.stem, "source": str(p), "media_type": "image"} for p in sorted((shared_data / "images").iterdir())]
    sampler = FrameSample(FrameSampleParams(num_frames=4))
    videos = pa.Table.from_pylist(rows[: -len(list((shared_data / "images").iterdir()))])
    images = pa.Table.from_pylist(rows[len(videos):])
    return pa.concat_tables([sampler.process_batch(videos).select(["key", "frames"]),
                             sampler.process_batch(images).select(["key", "frames"])])


def test_no_real_photo_or_video_is_flagged_at_the_default(nsfw, shared_data):
    frames = _real_frames(shared_data)
    out = nsfw.process_batch(frames)
    scores = out.column("nsfw_score").to_pylist()
    assert len(scores) >= 50 and all(s is not None and 0.0 <= s <= 1.0 for s in scores)
    assert nsfw.reasons(out) == [None] * len(scores)
    # The classifier discriminates: real media is not scored as one constant.
    assert max(scores) - min(scores) > 0.05


def test_a_clip_is_dropped_by_the_share_of_its_frames_above_the_limit(nsfw, shared_data):
    frames = _real_frames(shared_data)
    single = nsfw.process_batch(frames.slice(0, 1).select(["frames"]))
    one = single.column("frames")[0].as_py()
    per_frame = sorted(nsfw.process_batch(pa.table({"frames": pa.array([[f]], pa.list_(pa.binary()))}))
                       .column("nsfw_score")[0].as_py() for f in one)
    assert len(per_frame) == 4 and single.column("nsfw_score")[0].as_py() == pytest.approx(per_frame[-1])

    def judged(limit, share):
        stage = NsfwFilter(max_score=limit, min_fraction=share)
        stage._session = nsfw._session
        return stage.reasons(stage.process_batch(single.select(["frames"])))[0]

    between = (per_frame[1] + per_frame[2]) / 2  # two frames above, two below
    assert judged(between, 0.5).startswith("nsfw:unsafe: 50% of frames score > ")
    assert judged(between, 0.75) is None
    assert judged((per_frame[2] + per_frame[3]) / 2, 0.5) is None  # one frame alone does not drop it


def test_undecodable_or_missing_frames_reject_that_row_only(nsfw, shared_data):
    good = _real_frames(shared_data).column("frames")[0].as_py()
    batch = pa.table({"frames": pa.array([good, [b"not a jpeg"], [], None], pa.list_(pa.binary()))})
    out = nsfw.process_batch(batch)
    reasons = nsfw.reasons(out)
    assert reasons[0] is None
    assert all(r.startswith("nsfw:unscored:") for r in reasons[1:])
