"""face_crop: one square headshot per real photo, cut around its face, upright, at the configured size.

Ground truth: the face boxes of groundtruth/dlib_faces/{training,testing}.xml for the dlib_20xx_*.jpg
PASCAL VOC photos (group photos: face_crop rejects them, so the annotated faces are checked through
the stage's `faces` and `crop`); single-face portraits, group photos and photos without a face as
GROUND_TRUTH_INDEX.json and the file names say. `detect_side` was chosen on the training.xml photos;
`min_face_fraction` and `min_face_scale` follow from the framing they name (see their descriptions).
The face_recognition_* portraits, Tom Cruise and testing.xml were not looked at for any choice.
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from pydantic import ValidationError

from dataprep import columns
from dataprep.stages.image.face_crop import FaceCrop, FaceCropParams, square_around
from dataprep.stages.image.pil_io import decode_upright
from dataprep.stages.quality.face_detect import FaceBox

PORTRAITS = ["deepface_img2.jpg", "deepface_img5.jpg", "deepface_img11.jpg", "deepface_img16.jpg",
             "deepface_img21.jpg", "dlib_Tom_Cruise_avp_2014_4.jpg", "face_recognition_biden.jpg",
             "face_recognition_lin-manuel-miranda.png", "face_recognition_obama.jpg", "face_recognition_obama2.jpg",
             "face_recognition_obama_partial_face.jpg"]
GROUPS = ["face_recognition_two_people.jpg", "face_recognition_obama_and_biden.jpg",
          "deepface_selfie-many-people.jpg", "dlib_bald_guys.jpg"]
# 427x240: the face is about 50 px, a quarter of the 128 px face a 512 px crop needs.
TINY_FACE = "face_recognition_obama-240p.jpg"
SIZE = 512
# Targets, as for face_filter: 80% of faces found, found boxes overlapping the labelled ones by IoU 0.5 on
# average (detectors frame faces differently), a detection matching a labelled face from IoU 0.3.
MIN_DETECTION_RATE, MIN_MEAN_IOU, MATCH_IOU = 0.8, 0.5, 0.3
# Mean absolute difference (0-255) under which two crops show the same picture: JPEG re-encoding and
# resampling differ by 1-2 levels; a crop one face-width off differs by tens.
SAME_PICTURE = 4.0


def _rows(folder: Path, names: list[str]) -> pa.Table:
    return pa.Table.from_pylist([{"key": f"k{i}", "source": str(folder / n), "media_type": "image"}
                                 for i, n in enumerate(names)])


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _mad(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a.convert("RGB"), np.float64) - np.asarray(b.convert("RGB"), np.float64)).mean())


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


def _labelled(shared_data: Path) -> dict[str, tuple[str, list[tuple[int, int, int, int]]]]:
    """dlib's labelled faces: image name -> (split, [(left, top, width, height)] in the photo's pixels)."""
    out = {}
    for split in ("training", "testing"):
        root = ET.parse(shared_data / "groundtruth" / "dlib_faces" / f"{split}.xml").getroot()
        for image in root.iter("image"):
            name = f"dlib_{image.get('file')}"
            if (shared_data / "images" / name).is_file():
                out[name] = (split, [tuple(int(b.get(k)) for k in ("left", "top", "width", "height"))
                                     for b in image.iter("box")])
    return out


@pytest.fixture(scope="module")
def stage() -> FaceCrop:
    stage = FaceCrop(size=SIZE, threads=1)
    stage.setup()
    return stage


@pytest.fixture(scope="module")
def no_face(shared_data: Path) -> list[str]:
    index = json.loads((shared_data / "groundtruth" / "GROUND_TRUTH_INDEX.json").read_text())
    return index["images"]["no_human_face"][:3]


@pytest.fixture(scope="module")
def cropped(stage: FaceCrop, shared_data: Path, no_face: list[str]) -> dict[str, dict]:
    """The stage's output row for every photo these tests read, by file name."""
    names = PORTRAITS + GROUPS + no_face + [TINY_FACE]
    out = stage.process_batch(_rows(shared_data / "images", names))
    return dict(zip(names, out.to_pylist(), strict=True))


def test_portraits_give_one_crop_of_the_configured_size(cropped):
    kept = {n: cropped[n] for n in PORTRAITS if cropped[n][columns.REJECT] is None}
    print(f"portraits cropped: {len(kept)}/{len(PORTRAITS)}; rejected:",
          {n: cropped[n][columns.REJECT] for n in PORTRAITS if n not in kept})
    assert len(kept) >= MIN_DETECTION_RATE * len(PORTRAITS)
    for row in kept.values():
        assert _image(row[columns.MEDIA]).size == (SIZE, SIZE) and (row["width"], row["height"]) == (SIZE, SIZE)
        assert row[columns.MEDIA_EXT] == "jpg" and _image(row[columns.MEDIA]).format == "JPEG"
        assert [_image(f).size for f in row["frames"]] == [(256, 256)]
        assert row["face_count"] == 1 and row["face_score"] >= 0.9


def test_size_1024_gives_1024_crops_and_rejects_faces_too_small_for_it(shared_data):
    names = ["deepface_img4.jpg", "face_recognition_biden.jpg", "deepface_img5.jpg"]  # faces of 732, 285, 200 px
    out = FaceCrop(size=1024, threads=1).process_batch(_rows(shared_data / "images", names)).to_pylist()
    assert [_image(r[columns.MEDIA]).size for r in out[:2]] == [(1024, 1024)] * 2
    assert [(r["width"], r["height"]) for r in out[:2]] == [(1024, 1024)] * 2
    assert out[2][columns.REJECT].startswith("face_crop:face_too_small: ") and "size 1024" in out[2][columns.REJECT]


def test_each_crop_is_the_photo_inside_crop_box_and_holds_the_whole_face(cropped, shared_data):
    for name in PORTRAITS:
        row = cropped[name]
        if row[columns.REJECT] is not None:
            continue
        photo = decode_upright((shared_data / "images" / name).read_bytes(), max_pixels=10**9)
        c = row["crop_box"]
        assert c["w"] == c["h"] == row["crop_side"] and 0 <= c["x"] and c["x"] + c["w"] <= photo.width
        assert 0 <= c["y"] and c["y"] + c["h"] <= photo.height
        expected = photo.resize((SIZE, SIZE), Image.Resampling.LANCZOS, box=(c["x"], c["y"], c["x"] + c["w"],
                                                                              c["y"] + c["h"]))
        assert _mad(expected, _image(row[columns.MEDIA])) < SAME_PICTURE, name
        # The face box is not cut by the crop's edges: its shorter side is the face's, scaled to the crop.
        f = row["face_box"]
        assert 0 <= f["x"] and 0 <= f["y"] and f["x"] + f["w"] <= SIZE and f["y"] + f["h"] <= SIZE
        assert min(f["w"], f["h"]) == pytest.approx(row["face_px"] * SIZE / row["crop_side"], abs=2), name


@pytest.mark.parametrize("enlarge", [1, 2])
def test_crops_around_the_labelled_dlib_faces_hold_them(stage, shared_data, enlarge):
    # enlarge 2: the 500 px photos at 1000 px, so faces are found on a smaller copy and mapped back.
    for split in ("training", "testing"):
        ious, inside, total = [], 0, 0
        for name, (which, boxes) in _labelled(shared_data).items():
            if which != split:
                continue
            photo = decode_upright((shared_data / "images" / name).read_bytes(), max_pixels=10**9)
            photo = photo.resize((photo.width * enlarge, photo.height * enlarge), Image.Resampling.LANCZOS)
            boxes = [tuple(v * enlarge for v in b) for b in boxes]
            found = stage.faces(photo)
            pairs = sorted(((_iou(t, f), i, j) for i, t in enumerate(boxes) for j, f in enumerate(found)),
                           reverse=True)
            used_t, used_f = set(), set()
            for iou, i, j in pairs:
                if iou < MATCH_IOU or i in used_t or j in used_f:
                    continue
                used_t.add(i)
                used_f.add(j)
                ious.append(iou)
                crop, square, _ = stage.crop(photo, found[j])
                x, y, w, h = boxes[i]
                assert crop.size == (SIZE, SIZE)
                inside += (square.x <= x and square.y <= y and x + w <= square.x + square.side
                           and y + h <= square.y + square.side)
            total += len(boxes)
        print(f"dlib {split}.xml faces, photos x{enlarge}, detected at detect_side {stage.params.detect_side} and "
              f"mapped to the photo: {len(ious)}/{total} found, mean IoU {np.mean(ious):.3f}, labelled box inside "
              f"the crop {inside}/{len(ious)}")
        assert len(ious) / total >= MIN_DETECTION_RATE and np.mean(ious) >= MIN_MEAN_IOU
        assert inside == len(ious)


def _exif_jpeg(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


# Every other way a picture can lie: turned a quarter, half, three quarters, or mirrored.
TURNS = [Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270,
         Image.Transpose.FLIP_LEFT_RIGHT]


def _coarse(image: Image.Image) -> Image.Image:
    """32 px: the detector frames a re-encoded photo a percent or two differently (box sides 833 vs 844 px), which
    at full size moves every edge; at 32 px that is under a pixel, while a turned picture stays unlike itself."""
    return image.resize((32, 32), Image.Resampling.BOX)


def test_exif_rotated_photos_come_out_upright(stage, shared_data, tmp_path):
    # 910x1137 with the face in its upper half: the crop is a square inside the photo, not its whole width.
    upright = Image.open(shared_data / "images" / "face_recognition_obama.jpg").convert("RGB")
    # The pixels a camera stores for each orientation tag: exif_transpose's inverse.
    stored = {1: upright, 3: upright.transpose(Image.Transpose.ROTATE_180),
              6: upright.transpose(Image.Transpose.ROTATE_90), 8: upright.transpose(Image.Transpose.ROTATE_270),
              5: upright.transpose(Image.Transpose.TRANSPOSE)}
    for tag, pixels in stored.items():
        (tmp_path / f"o{tag}.jpg").write_bytes(_exif_jpeg(pixels, tag))
    names = [f"o{tag}.jpg" for tag in stored]
    rows = dict(zip(stored, stage.process_batch(_rows(tmp_path, names)).to_pylist(), strict=True))
    reference = _coarse(_image(rows[1][columns.MEDIA]))
    for tag, row in rows.items():
        assert row[columns.REJECT] is None, (tag, row[columns.REJECT])
        crop = _coarse(_image(row[columns.MEDIA]))
        upright_difference = _mad(reference, crop)
        turned_difference = min(_mad(reference, crop.transpose(t)) for t in TURNS)
        print(f"orientation {tag}: crop {row['crop_box']}, mean difference to the upright photo's crop "
              f"{upright_difference:.1f}, turned or mirrored {turned_difference:.1f}")
        assert upright_difference < turned_difference / 3
        assert all(abs(row["face_box"][k] - rows[1]["face_box"][k]) <= 0.02 * SIZE for k in "xywh")


def test_the_exif_orientation_pair_decodes_to_one_upright_picture(shared_data):
    one, six = (decode_upright((shared_data / "images" / f"exif-orientation-examples_Landscape_{n}.jpg")
                               .read_bytes(), max_pixels=10**9) for n in (1, 6))
    assert one.size == six.size == (1800, 1200)
    # The photos differ only by the orientation digit drawn on them; a sideways decode would not even match sizes,
    # and a wrong rotation of the same size (3: upside down) differs by far more.
    assert _mad(one, six) < SAME_PICTURE < _mad(one, six.transpose(Image.Transpose.ROTATE_180))


def test_group_photos_are_rejected_with_the_number_of_faces(cropped):
    for name in GROUPS:
        row = cropped[name]
        print(name, row[columns.REJECT])
        assert row[columns.REJECT].startswith("face_crop:several_faces: "), name
        assert row["face_count"] >= 2 and row[columns.MEDIA] is None


def test_photos_without_a_face_are_rejected(cropped, no_face):
    assert [cropped[n][columns.REJECT] for n in no_face] == ["face_crop:no_face"] * len(no_face)
    assert all(cropped[n]["face_count"] == 0 for n in no_face)


def test_small_faces_are_rejected_relative_to_the_output_and_to_the_photo(cropped, stage, shared_data, tmp_path):
    row = cropped[TINY_FACE]
    assert row[columns.REJECT].startswith("face_crop:face_too_small: ") and "min_face_scale" in row[columns.REJECT]
    assert row["face_px"] < 0.25 * SIZE
    # A 375 px face (large enough for a 512 px crop) in the middle of a 4000 px empty frame: a full-length shot.
    canvas = Image.new("RGB", (4000, 4000), (120, 120, 120))
    canvas.paste(Image.open(shared_data / "images" / "deepface_img2.jpg").convert("RGB"), (1000, 1400))
    canvas.save(tmp_path / "far.jpg", quality=90)
    (far,) = stage.process_batch(_rows(tmp_path, ["far.jpg"])).to_pylist()
    assert far[columns.REJECT].startswith("face_crop:face_too_small: ") and "min_face_fraction" in far[columns.REJECT]
    assert far["face_px"] >= 0.25 * SIZE and far["face_fraction"] < 0.1


def test_a_dominant_face_keeps_the_photo_unless_every_second_face_rejects(stage, shared_data, tmp_path):
    # A portrait with a face a third as tall pasted in a corner: a stranger in the background.
    photo = Image.open(shared_data / "images" / "deepface_img9.jpg").convert("RGB")
    stranger = Image.open(shared_data / "images" / "deepface_img5.jpg").convert("RGB")
    stranger = stranger.resize((stranger.width // 3, stranger.height // 3))
    photo.paste(stranger, (photo.width - stranger.width - 20, photo.height - stranger.height - 20))
    photo.save(tmp_path / "background.jpg", quality=95)
    (kept,) = stage.process_batch(_rows(tmp_path, ["background.jpg"])).to_pylist()
    assert kept[columns.REJECT] is None and kept["face_count"] == 2
    assert kept["face_box"]["w"] > SIZE / 4  # the crop is around the subject, not the stranger
    strict = FaceCrop(size=SIZE, dominant_ratio=None, threads=1)
    (dropped,) = strict.process_batch(_rows(tmp_path, ["background.jpg"])).to_pylist()
    assert dropped[columns.REJECT].startswith("face_crop:several_faces: 2 faces, the largest ")


def test_the_square_is_centred_on_the_face_and_moved_inside_the_photo():
    # The face's centre (450, 360), a side of 2.5 x 120 px.
    assert square_around(FaceBox(400, 300, 100, 120, 1.0), 1000, 800, 0.75) == (300, 210, 300)
    # Near the left edge: moved right, the face still inside.
    assert square_around(FaceBox(10, 300, 100, 120, 1.0), 1000, 800, 0.75) == (0, 210, 300)
    # Too wide for a 250 px tall photo: shrunk to 250 and kept inside.
    assert square_around(FaceBox(400, 60, 100, 120, 1.0), 1000, 250, 0.75) == (325, 0, 250)
    assert square_around(FaceBox(0, 0, 50, 50, 1.0), 50, 50, 0.0) == (0, 0, 50)


def test_bad_rows_are_rejected_with_reasons(stage, tmp_path):
    (tmp_path / "notes.jpg").write_bytes(b"not an image at all")
    whole = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 150)).save(whole, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(whole.getvalue()[:len(whole.getvalue()) // 2])  # a transfer cut short
    (tmp_path / "clip.mp4").write_bytes(b"")
    rows = _rows(tmp_path, ["notes.jpg", "cut.jpg", "clip.mp4"]).to_pylist()
    rows[2]["media_type"] = "video"
    out = stage.process_batch(pa.Table.from_pylist(rows)).to_pylist()
    assert out[0][columns.REJECT].startswith("image:undecodable: not an image format Pillow can read")
    assert out[1][columns.REJECT].startswith("image:corrupt: ")
    assert out[2][columns.REJECT].startswith("face_crop:not_an_image: media_type 'video'")


def test_options_are_checked():
    with pytest.raises(ValidationError, match="multiple of 8"):
        FaceCropParams(size=500)
    with pytest.raises(ValidationError, match="yunet_model"):
        FaceCropParams(detector="yunet")
    assert FaceCrop().preflight() == []
    assert FaceCrop.needs_actor() and FaceCrop.members == {"frames": "frames.jpg"}
