"""image_standardize: odd images come out upright 8-bit RGB at the configured size, or rejected with a reason."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from dataprep import columns
from dataprep.stages.image.standardize import ImageStandardize


def _png(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **save)
    return buffer.getvalue()


def _run(stage: ImageStandardize, files: dict[str, bytes], tmp_path: Path, **row) -> dict[str, dict]:
    rows = []
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        rows.append({"key": path.stem.replace(".", "_"), "source": str(path), "media_type": "image", **row})
    out = stage.process_batch(pa.Table.from_pylist(rows))
    return {name: row for name, row in zip(files, out.to_pylist(), strict=True)}


def _decoded(row: dict) -> Image.Image:
    image = Image.open(io.BytesIO(row[columns.MEDIA]))
    image.load()
    return image


def _gradient(w: int = 96, h: int = 64) -> np.ndarray:
    x = np.linspace(0, 255, w)[None, :, None]
    y = np.linspace(0, 255, h)[:, None, None]
    return np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)),
                           np.full((h, w, 1), 128.0)], axis=2).astype(np.uint8)


@pytest.fixture(scope="module")
def odd_files() -> dict[str, bytes]:
    import cv2

    rgb = Image.fromarray(_gradient())
    jpeg = io.BytesIO()
    rgb.save(jpeg, "JPEG", quality=90)
    cmyk = io.BytesIO()
    rgb.convert("CMYK").save(cmyk, "JPEG", quality=95)
    grey16 = Image.fromarray((np.linspace(0, 65535, 96 * 64).reshape(64, 96)).astype(np.uint16))
    ok, rgb16 = cv2.imencode(".png", (_gradient().astype(np.uint16) * 257)[:, :, ::-1])
    palette = Image.new("P", (96, 64), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (0, 0, 48, 64))  # left half blue, right half index 0 = transparent red
    frames = [Image.new("RGB", (96, 64), c) for c in ((0, 200, 0), (200, 0, 0))]
    gif, webp = io.BytesIO(), io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(webp, "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    return {
        "plain.jpg": jpeg.getvalue(),
        "truncated.jpg": jpeg.getvalue()[: len(jpeg.getvalue()) // 2],
        "grey16.png": _png(grey16),
        "rgb16.png": rgb16.tobytes() if ok else b"",
        "cmyk.jpg": cmyk.getvalue(),
        "palette.png": _png(palette, transparency=0),
        "animated.gif": gif.getvalue(),
        "animated.webp": webp.getvalue(),
        "bomb.png": _png(Image.new("1", (12000, 12000))),
        "tiny.png": _png(Image.new("RGB", (1, 1), (10, 20, 30))),
        "drawing.png": b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        "photo.png": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64,
    }


def test_odd_images_are_standardized_or_rejected_with_a_reason(odd_files, tmp_path):
    stage = ImageStandardize(width=48, height=32, format="png", max_upscale=2.0)
    out = _run(stage, odd_files, tmp_path)
    reasons = {name: row[columns.REJECT] for name, row in out.items()}
    assert reasons["truncated.jpg"].startswith("image:corrupt:")
    assert reasons["bomb.png"].startswith("image:too_many_pixels: 12000x12000")
    assert reasons["tiny.png"].startswith("image:upscale: 1x1")
    assert reasons["drawing.png"].startswith("image:undecodable:") and "SVG" in reasons["drawing.png"]
    assert reasons["photo.png"].startswith("image:undecodable:") and "HEIC" in reasons["photo.png"]
    made = {n for n, r in reasons.items() if r is None}
    assert made == {"plain.jpg", "grey16.png", "rgb16.png", "cmyk.jpg", "palette.png", "animated.gif", "animated.webp"}
    for name in made:
        image = _decoded(out[name])
        assert (image.mode, image.size, out[name]["media_ext"]) == ("RGB", (48, 32), "png"), name
        assert "exif" not in image.info
    # 16-bit input keeps its range (scaled, not clipped at 255): dark to light across the frame.
    grey = np.asarray(_decoded(out["grey16.png"]).convert("L"), dtype=float)
    assert grey[0].mean() < 40 and grey[-1].mean() > 215
    # Colours survive the CMYK and 16-bit RGB conversions (gradient: red rises left to right).
    for name in ("cmyk.jpg", "rgb16.png"):
        red = np.asarray(_decoded(out[name]), dtype=float)[..., 0]
        assert red[:, :5].mean() < 60 and red[:, -5:].mean() > 195, name
    # Transparency is composited on the white background; the opaque half stays blue.
    palette = np.asarray(_decoded(out["palette.png"]), dtype=float)
    assert palette[:, :20].mean(axis=(0, 1)) == pytest.approx([0, 0, 255], abs=8)
    assert palette[:, -20:].mean(axis=(0, 1)) == pytest.approx([255, 255, 255], abs=8)
    # Animated files give their first (green) frame.
    for name in ("animated.gif", "animated.webp"):
        assert np.asarray(_decoded(out[name]), dtype=float)[..., 1].mean() > 150, name


def test_animated_reject_option_and_background(odd_files, tmp_path):
    stage = ImageStandardize(width=48, height=32, animated="reject", background=(0, 0, 0))
    out = _run(stage, {k: odd_files[k] for k in ("animated.gif", "animated.webp", "palette.png")}, tmp_path)
    assert out["animated.gif"][columns.REJECT].startswith("image:animated: GIF with 2 frames")
    assert out["animated.webp"][columns.REJECT].startswith("image:animated: WEBP with 2 frames")
    assert np.asarray(_decoded(out["palette.png"]), dtype=float)[:, -20:].mean() < 10  # black background


def test_buckets_modes_and_formats(tmp_path):
    wide = _png(Image.fromarray(np.tile(_gradient(), (2, 4, 1))))  # 384x128, aspect 3
    tall = _png(Image.fromarray(np.tile(_gradient(), (4, 1, 1))))  # 96x256
    buckets = [[64, 64], [96, 48], [48, 96]]
    out = _run(ImageStandardize(buckets=buckets, format="webp", quality=80), {"w.png": wide, "t.png": tall}, tmp_path)
    assert (out["w.png"]["bucket"], out["t.png"]["bucket"]) == ("96x48", "48x96")
    assert _decoded(out["w.png"]).format == "WEBP" and out["w.png"]["media_ext"] == "webp"
    padded = _run(ImageStandardize(width=64, height=64, resize_mode="pad"), {"w.png": wide}, tmp_path)["w.png"]
    image = np.asarray(_decoded(padded), dtype=float)
    assert image.shape == (64, 64, 3) and image[:8].mean() > 245  # white bars above the fitted picture
    fitted = _run(ImageStandardize(width=64, height=64, resize_mode="fit"), {"w.png": wide}, tmp_path)["w.png"]
    assert (fitted["width"], fitted["height"]) == (64, 21)


def test_a_letterbox_crop_is_cut_before_resizing(tmp_path):
    picture = np.full((60, 100, 3), 200, np.uint8)
    barred = np.zeros((100, 100, 3), np.uint8)
    barred[20:80] = picture
    out = _run(ImageStandardize(width=50, height=30), {"b.png": _png(Image.fromarray(barred))}, tmp_path,
               crop={"x": 0, "y": 20, "w": 100, "h": 60})["b.png"]
    assert np.asarray(_decoded(out), dtype=float).min() > 150  # no black bar left


def test_exif_rotated_photos_come_out_upright(shared_data, tmp_path):
    folder = shared_data / "images"
    upright = (folder / "exif-orientation-examples_Landscape_1.jpg").read_bytes()
    stage = ImageStandardize(width=300, height=200, format="png")
    for name in ("exif-orientation-examples_Landscape_6.jpg",):
        out = _run(stage, {"upright.jpg": upright, "rotated.jpg": (folder / name).read_bytes()}, tmp_path)
        a = np.asarray(_decoded(out["upright.jpg"]), dtype=float)
        b = np.asarray(_decoded(out["rotated.jpg"]), dtype=float)
        assert np.abs(a - b).mean() < 12, name
        # The same photo turned the other way differs a lot: the comparison can tell.
        assert np.abs(a - np.asarray(_decoded(out["upright.jpg"]).rotate(180), dtype=float)).mean() > 25
