"""augment: each crop gives its original and one copy per augmentation, as child rows with their own keys."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from pydantic import ValidationError

from dataprep import columns
from dataprep.finalize import StageInfo, funnel
from dataprep.stages.image.augment import Augment, jitter_crop
from dataprep.stages.image.pil_io import encode, thumbnail

SIZE = 128
FACE = {"x": 20, "y": 30, "w": 40, "h": 50}


def _picture(face: dict[str, int] = FACE) -> Image.Image:
    """A left-right asymmetric picture: a gradient with a dark block where the 'face' is."""
    x = np.linspace(0, 255, SIZE)[None, :, None]
    y = np.linspace(0, 255, SIZE)[:, None, None]
    pixels = np.concatenate([np.broadcast_to(x, (SIZE, SIZE, 1)), np.broadcast_to(y, (SIZE, SIZE, 1)),
                             np.full((SIZE, SIZE, 1), 128.0)], axis=2).astype(np.uint8)
    pixels[face["y"]:face["y"] + face["h"], face["x"]:face["x"] + face["w"]] = 20
    return Image.fromarray(pixels)


def _batch(**extra) -> pa.Table:
    picture = _picture()
    row = {"key": "selfie-0123", "source": "/photos/selfie.jpg", columns.MEDIA: encode(picture, "png", 95),
           columns.MEDIA_EXT: "png", "face_box": FACE, "frames": [thumbnail(picture, 64)], "caption": "a photo of sks",
           **extra}
    return pa.Table.from_pylist([row])


def _image(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.int16)


def test_each_augmentation_is_a_child_row_keyed_by_its_name():
    out = Augment(augmentations=["color", "flip", "crop_jitter"]).process_batch(_batch()).to_pylist()
    by_name = {r["augmentation"]: r for r in out}
    assert set(by_name) == {"none", "flip", "crop_jitter", "color"} and len(out) == 4
    # The index is the augmentation's, not its place in the list: flip is _c0001 whatever the order.
    assert {n: r["key"] for n, r in by_name.items()} == {
        "none": "selfie-0123_c0000", "flip": "selfie-0123_c0001", "crop_jitter": "selfie-0123_c0002",
        "color": "selfie-0123_c0003"}
    assert {r[columns.PARENT] for r in out} == {"selfie-0123"}
    assert all(r["caption"] == "a photo of sks" and r["source"] == "/photos/selfie.jpg" for r in out)
    original = by_name["none"]
    assert original[columns.MEDIA] == _batch().column(columns.MEDIA)[0].as_py() and original["face_box"] == FACE
    for row in out:
        assert _image(row[columns.MEDIA]).shape == (SIZE, SIZE, 3) and len(row["frames"]) == 1
        assert Image.open(io.BytesIO(row[columns.MEDIA])).format == "PNG" and row[columns.MEDIA_EXT] == "png"
    webp = Augment().process_batch(_batch(**{columns.MEDIA: encode(_picture(), "jpeg", 90)}, media_ext="webp"))
    assert webp.column(columns.MEDIA_EXT).to_pylist() == ["webp", "jpg"]  # the original keeps its own


def test_flip_mirrors_the_pixels_and_the_face_box():
    (original, flipped) = Augment(augmentations=["flip"]).process_batch(_batch()).to_pylist()
    assert np.array_equal(_image(flipped[columns.MEDIA]), _image(original[columns.MEDIA])[:, ::-1])
    assert flipped["face_box"] == {"x": SIZE - FACE["x"] - FACE["w"], "y": FACE["y"], "w": FACE["w"], "h": FACE["h"]}
    assert np.abs(_image(flipped["frames"][0]) - _image(original["frames"][0])[:, ::-1]).mean() < 3


def test_crop_jitter_keeps_the_face_inside_and_moves_its_box_with_the_pixels():
    # A face 2 px from the left edge: most windows placed anywhere would cut it.
    face = {"x": 2, "y": 30, "w": 40, "h": 50}
    picture = _picture(face)
    box = tuple(float(face[k]) for k in "xywh")
    for seed in range(20):
        out, moved = jitter_crop(picture, box, 0.2, np.random.default_rng(seed))
        assert out.size == picture.size
        x, y, w, h = moved
        assert 0 <= x and 0 <= y and x + w <= SIZE + 1e-6 and y + h <= SIZE + 1e-6
        assert w == pytest.approx(face["w"] * h / face["h"], rel=1e-6) and w >= face["w"]  # enlarged, not cut
        # The dark 'face' block is where the box says.
        inner = np.asarray(out, np.int16)[round(y) + 2:round(y + h) - 2, round(x) + 2:round(x + w) - 2]
        assert inner.mean() < 30


def test_copies_are_the_same_bytes_on_every_run_and_differ_between_keys():
    stage = Augment(augmentations=["crop_jitter", "color"])
    first, second = (stage.process_batch(_batch()).to_pylist() for _ in range(2))
    assert [r[columns.MEDIA] for r in first] == [r[columns.MEDIA] for r in second]
    other = stage.process_batch(_batch(key="selfie-4567")).to_pylist()
    assert first[1][columns.MEDIA] != other[1][columns.MEDIA] and first[2][columns.MEDIA] != other[2][columns.MEDIA]
    assert first[2]["face_box"] == FACE  # colour leaves the geometry alone
    assert 0 < np.abs(_image(first[2][columns.MEDIA]) - _image(first[0][columns.MEDIA])).mean() < 40


def test_no_augmentation_passes_rows_through_and_a_row_without_media_is_rejected():
    batch = _batch()
    passed = Augment(augmentations=[]).process_batch(batch)
    assert passed.select(batch.column_names).to_pylist() == batch.to_pylist()
    assert passed.column(columns.PARENT).to_pylist() == [None] and passed.column(columns.REJECT).to_pylist() == [None]
    (row,) = Augment().process_batch(_batch(**{columns.MEDIA: None})).to_pylist()
    assert row[columns.REJECT].startswith("augment:no_media: ") and row["key"] == "selfie-0123"
    with pytest.raises(ValidationError, match="twice"):
        Augment(augmentations=["flip", "flip"])
    assert Augment.expands


def test_the_funnel_counts_the_copies_as_the_stage_s_output():
    stages = [StageInfo(0, "ingest", False), StageInfo(1, "face_crop", False), StageInfo(2, "augment", True),
              StageInfo(3, "vae_latents", False)]
    kept = [f"p{i}_c{n:04d}" for i in range(3) for n in (0, 1)]
    rows = {r["stage"]: r for r in funnel(stages, kept, [("p3", 1, "face_crop:no_face")])}
    assert (rows["face_crop"]["in"], rows["face_crop"]["out"]) == (4, 3)
    assert (rows["augment"]["in"], rows["augment"]["out"]) == (3, 6)
    assert (rows["vae_latents"]["in"], rows["vae_latents"]["out"]) == (6, 6)
