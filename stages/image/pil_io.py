"""Pillow helpers of the headshot stages: decode upright RGB, encode an output image, make its thumbnail.

A photo's bytes become an upright 8-bit RGB image (EXIF orientation applied, alpha composited on
white) or a `Rejected` with the `image:` reasons `image_standardize` gives; an output image becomes
JPEG or PNG bytes; a thumbnail is the `frames` JPEG that frame filters (blur, exposure, dedup) read.
"""

from __future__ import annotations

import io
import warnings
from typing import Literal

from PIL import Image, ImageOps, UnidentifiedImageError

from dataprep.errors import Rejected

ImageFormat = Literal["jpeg", "png"]
EXTENSIONS: dict[str, str] = {"jpeg": "jpg", "png": "png"}
# frame_sample's thumbnail quality: 85 shows no artefacts a frame score reacts to.
THUMB_QUALITY = 85


def decode_upright(data: bytes, *, max_pixels: int) -> Image.Image:
    """`data` as an upright RGB image at full resolution; raises Rejected when it cannot be one."""
    try:
        with warnings.catch_warnings():
            # The size is checked against max_pixels below; Pillow's own warning would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > max_pixels:
                raise Rejected(f"image:too_many_pixels: {image.width}x{image.height} > max_pixels {max_pixels}")
            image.load()
    except Image.DecompressionBombError as exc:
        raise Rejected(f"image:too_many_pixels: {exc}") from None
    except UnidentifiedImageError:
        raise Rejected(f"image:undecodable: not an image format Pillow can read ({len(data)} bytes)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise Rejected(f"image:corrupt: {exc}") from None
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image if image.mode == "RGB" else image.convert("RGB")


def encode(image: Image.Image, image_format: ImageFormat, quality: int) -> bytes:
    """`image` as JPEG (at `quality`, 1-100) or PNG bytes."""
    buffer = io.BytesIO()
    if image_format == "jpeg":
        image.save(buffer, "JPEG", quality=quality)
    else:
        image.save(buffer, "PNG", compress_level=6)
    return buffer.getvalue()


def thumbnail(image: Image.Image, side: int) -> bytes:
    """A JPEG of `image` with its longer side `side` px, as `frame_sample` makes them."""
    small = image.copy()
    small.thumbnail((side, side), Image.Resampling.LANCZOS)
    return encode(small, "jpeg", THUMB_QUALITY)
