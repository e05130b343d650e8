"""`image_standardize`: every image upright, RGB, at a training size, in one format.

    stages:
      - stage: image_standardize
        buckets: [[1024, 1024], [1152, 896], [896, 1152], [1216, 832], [832, 1216]]
        resize_mode: crop        # crop | pad | fit
        max_upscale: 1.5
        format: jpeg             # jpeg | png | webp
        quality: 90

Per image: decoded with Pillow; the EXIF orientation applied (pixels come out upright and the
EXIF is not copied); a `crop` rectangle from `letterbox` (upright pixels) cut out; converted to
8-bit RGB (CMYK, palette, 16-bit and greyscale converted; alpha composited on `background`); sized
to `width` x `height` or to the bucket nearest its aspect ratio (the video buckets' rule); encoded.
Animated GIF/WebP/PNG give their first frame or are rejected (`animated`). What cannot be read is
a rejected row with the reason: truncated or corrupt files, formats Pillow cannot decode (SVG,
HEIC without pillow-heif), images above `max_pixels` (decompression bombs), images too small
for `max_upscale`.
"""

from __future__ import annotations

import io
import warnings
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import Field, field_validator, model_validator

from dataprep import columns, storage
from dataprep.errors import Rejected
from dataprep.stage import Resources, Stage, StageParams
from dataprep.stages.video.plan import Geometry, nearest_bucket, upscale_factor

_FIELDS = pa.schema([
    (columns.MEDIA, pa.large_binary()), (columns.MEDIA_EXT, pa.string()), ("width", pa.int64()),
    ("height", pa.int64()), ("bucket", pa.string()),
])
_EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp"}


class ImageStandardizeParams(StageParams):
    """Options of `image_standardize`."""

    width: int = Field(1024, ge=8, le=16384, description="Output width (px) when `buckets` is not set.")
    height: int = Field(1024, ge=8, le=16384, description="Output height (px) when `buckets` is not set.")
    buckets: list[tuple[int, int]] | None = Field(
        None, description="Aspect-ratio buckets as [width, height] (px); each image goes to the bucket nearest its "
        "aspect ratio (recorded in `bucket`), as video clips do. None: one size.")
    resize_mode: Literal["crop", "pad", "fit"] = Field(
        "crop", description="crop: cover the size and cut the overflow evenly; pad: fit inside and fill with "
        "`background`; fit: fit inside, no padding (output may be smaller on one side; not with buckets).")
    max_upscale: float | None = Field(
        2.0, ge=1, description="Reject images that would be enlarged more than this (factor); 2.0: beyond it a "
        "model learns interpolation blur. None: no limit.")
    format: Literal["jpeg", "png", "webp"] = Field("jpeg", description="Output encoding.")
    quality: int = Field(
        90, ge=1, le=100, description="JPEG/WebP quality (1-100); 90 leaves no artefacts a model learns.")
    background: tuple[int, int, int] = Field(
        (255, 255, 255), description="RGB (0-255) that transparent pixels are composited on, and `pad` fills with.")
    animated: Literal["first_frame", "reject"] = Field(
        "first_frame", description="An animated GIF/WebP/PNG: keep its first frame, or reject it.")
    max_pixels: int = Field(
        100_000_000, ge=1, le=2 * Image.MAX_IMAGE_PIXELS, description="Reject images with more pixels than this, "
        "read from the header before decoding (decompression bombs); 100 MP is beyond any camera photo a training "
        "set wants and decodes in about 300 MB. At most Pillow's own hard limit.")

    @field_validator("buckets")
    @classmethod
    def _buckets(cls, value: list[tuple[int, int]] | None) -> list[tuple[int, int]] | None:
        if value is not None and (not value or any(w < 8 or h < 8 for w, h in value)):
            raise ValueError(f"`buckets` must list [width, height] pairs of at least 8 px, got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ImageStandardizeParams:
        if self.buckets is not None and self.resize_mode == "fit":
            raise ValueError("`resize_mode: fit` cannot be used with `buckets` (a bucket is an exact size); "
                             "use crop or pad")
        return self


class ImageStandardize(Stage):
    """Replaces each image with an upright RGB image of the configured size and format, in `media`."""

    name = "image_standardize"
    reads = (columns.KEY, columns.SOURCE)
    writes = tuple(_FIELDS.names)
    members: ClassVar[dict[str, str]] = {}
    Params = ImageStandardizeParams
    resources: ClassVar[Resources] = Resources(cpus=1.0)
    batch_size = 32

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Standardize every image row; other rows (videos in a mixed job) pass unchanged."""
        return self.map_rows(batch, self._row, fields=_FIELDS)

    def _row(self, row: dict[str, Any]) -> dict[str, Any]:
        if row.get("media_type") not in (None, "image"):
            return {}
        data = row.get(columns.MEDIA) or storage.read_bytes(row[columns.SOURCE])
        image = self._decode(data)
        image = _cut(image, row.get("crop"))
        out, bucket = self._resize(image)
        return {columns.MEDIA: _encode(out, self.params), columns.MEDIA_EXT: _EXTENSIONS[self.params.format],
                "width": out.width, "height": out.height, "bucket": bucket}

    def _decode(self, data: bytes) -> Image.Image:
        p = self.params
        try:
            with warnings.catch_warnings():
                # The size is checked against max_pixels below; Pillow's own warning would only repeat it.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
                if image.width * image.height > p.max_pixels:
                    raise Rejected(f"image:too_many_pixels: {image.width}x{image.height} > max_pixels {p.max_pixels}")
                if getattr(image, "is_animated", False) and p.animated == "reject":
                    raise Rejected(f"image:animated: {image.format} with {image.n_frames} frames (animated: reject)")
                image.seek(0)
                image.load()
        except Image.DecompressionBombError as exc:
            raise Rejected(f"image:too_many_pixels: {exc}") from None
        except UnidentifiedImageError:
            raise Rejected(f"image:undecodable: not an image format Pillow can read ({_sniff(data)})") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise Rejected(f"image:corrupt: {exc}") from None
        return _to_rgb(ImageOps.exif_transpose(image), p.background)

    def _resize(self, image: Image.Image) -> tuple[Image.Image, str | None]:
        p = self.params
        w, h = image.size
        if p.buckets is not None:
            bw, bh = nearest_bucket(w, h, p.buckets)
            geometry, bucket = Geometry(bw, bh, p.resize_mode, f"{bw}x{bh}"), f"{bw}x{bh}"
        else:
            geometry, bucket = Geometry(p.width, p.height, p.resize_mode), None
        factor = upscale_factor(w, h, geometry)
        if p.max_upscale is not None and factor > p.max_upscale + 1e-9:
            raise Rejected(f"image:upscale: {w}x{h} would be enlarged {factor:.2f}x to {geometry.width}x"
                           f"{geometry.height} > max_upscale {p.max_upscale}")
        if p.resize_mode == "crop":
            return ImageOps.fit(image, (geometry.width, geometry.height), Image.Resampling.LANCZOS), bucket
        fitted = ImageOps.contain(image, (geometry.width, geometry.height), Image.Resampling.LANCZOS)
        if p.resize_mode == "fit":
            return fitted, bucket
        canvas = Image.new("RGB", (geometry.width, geometry.height), tuple(p.background))
        canvas.paste(fitted, ((geometry.width - fitted.width) // 2, (geometry.height - fitted.height) // 2))
        return canvas, bucket


def _sniff(data: bytes) -> str:
    """What the bytes look like, for the reason of an undecodable file."""
    head = data[:256].lstrip().lower()
    if head.startswith(b"<?xml") or b"<svg" in head:
        return "an SVG drawing; rasterize it first"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftyphevc", b"ftypavif"):
        return "HEIC/AVIF; install pillow-heif to read it"
    return f"{len(data)} bytes starting {data[:8]!r}"


def _to_rgb(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """8-bit RGB: 16-bit scaled down, CMYK and palette converted, transparency composited on `background`."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: Pillow's convert("L") clips at 255; scale the range down instead.
        image = Image.fromarray((np.asarray(image, dtype=np.float64) / 257).clip(0, 255).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("LA", "La", "PA"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "RGBa"):
        canvas = Image.new("RGB", image.size, tuple(background))
        canvas.paste(image, mask=image.getchannel("A"))
        return canvas
    return image if image.mode == "RGB" else image.convert("RGB")


def _cut(image: Image.Image, crop: Any) -> Image.Image:
    """`image` inside the `crop` rectangle ({x, y, w, h} in upright pixels) when one is given."""
    if not crop:
        return image
    x, y, w, h = (int(crop[k]) for k in ("x", "y", "w", "h"))
    x, y = max(0, x), max(0, y)
    right, bottom = min(image.width, x + w), min(image.height, y + h)
    if right - x < 8 or bottom - y < 8:
        raise Rejected(f"image:bad_crop: crop {crop} leaves less than 8 px of a {image.width}x{image.height} image")
    return image.crop((x, y, right, bottom))


def _encode(image: Image.Image, p: ImageStandardizeParams) -> bytes:
    buffer = io.BytesIO()
    if p.format == "jpeg":
        image.save(buffer, "JPEG", quality=p.quality, optimize=False)
    elif p.format == "webp":
        image.save(buffer, "WEBP", quality=p.quality, method=4)
    else:
        image.save(buffer, "PNG", compress_level=6)
    return buffer.getvalue()
