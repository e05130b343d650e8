"""`augment`: extra training samples made from each image: mirrored, re-framed or re-coloured copies.

    stages:
      - stage: face_crop
      - stage: augment
        augmentations: [flip, crop_jitter, color]
      - stage: vae_latents      # after augment: every copy gets its own latent

Each row becomes its original plus one copy per augmentation, as a split stage's children:
keys `child_key(key, i)` with `parent_key` the input's key and `augmentation` naming what made
the copy ("none" for the original). The index i is fixed per augmentation name (none 0, flip 1,
crop_jitter 2, color 3), so a key says what it holds whatever the order of the list, and the
random draws of a copy are seeded by its parent's key and the augmentation's name, so a rerun
makes the same bytes. The original is renamed too, so a resumed job sees the input done only
when all of its copies are committed. The funnel of `summary.json` counts the stage's rows in
and out. `face_box` and `frames` (when the row has them; thumbnails of the size of the row's own) are
made anew for each copy, so they describe the copy's pixels.

- flip: mirrored left to right. Faces are nearly symmetric, but a side parting or a mole moves;
  leave flip out when such details are part of the identity.
- crop_jitter: a window `jitter` smaller at most, moved at random but keeping the face box inside
  when there is one, enlarged back to the size: the framing varies as between real photos.
- color: brightness, contrast and saturation each scaled by a factor within 1 +- `color`; hue is
  left alone, since skin tone is part of the identity.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from PIL import Image, ImageEnhance, ImageOps
from pydantic import Field, field_validator

from dataprep import columns
from dataprep.errors import Rejected
from dataprep.stage import Resources, RowResult, Stage, StageParams
from dataprep.stages.image.pil_io import EXTENSIONS, decode_upright, encode, thumbnail

Augmentation = Literal["flip", "crop_jitter", "color"]
# Child index of each output row (see the module docstring); the original is 0.
INDEX: dict[str, int] = {"none": 0, "flip": 1, "crop_jitter": 2, "color": 3}
_BOX = pa.struct([("x", pa.int32()), ("y", pa.int32()), ("w", pa.int32()), ("h", pa.int32())])
_FIELDS = pa.schema([
    (columns.KEY, pa.string()), (columns.PARENT, pa.string()), ("augmentation", pa.string()),
    (columns.MEDIA, pa.large_binary()), (columns.MEDIA_EXT, pa.string()), ("face_box", _BOX), ("frames", pa.list_(pa.binary())),
])
Box = tuple[float, float, float, float]  # x, y, w, h in the image's pixels


class AugmentParams(StageParams):
    """Options of `augment`."""

    augmentations: list[Augmentation] = Field(
        ["flip"], description="One extra sample per name listed: flip, crop_jitter, color. Default flip: the one "
        "DreamBooth/LoRA trainers commonly apply to faces. An empty list passes rows through unchanged.")
    jitter: float = Field(
        0.08, gt=0, le=0.5, description="crop_jitter: the window is up to this fraction smaller than the image on "
        "each side (0-0.5); 0.08 moves the framing by up to 40 px at 512 px while enlarging by 1.09x at most, "
        "which adds no visible blur.")
    color: float = Field(
        0.1, gt=0, le=0.5, description="color: brightness, contrast and saturation are each scaled by a factor "
        "drawn within 1 +- this (0-0.5); 0.1 is the lighting difference between two photos of one sitting, well "
        "inside what exposure_filter keeps.")
    quality: int = Field(
        95, ge=1, le=100, description="JPEG quality (1-100) of the copies; 95, as face_crop: skin artefacts would "
        "be learned. PNG inputs give PNG copies, others (JPEG, WebP) JPEG copies.")

    @field_validator("augmentations")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"`augmentations` lists a name twice ({value}); each makes one copy with a key of its "
                             "own, so list each once")
        return value


class Augment(Stage):
    """Adds, for each row, one copy per augmentation as a child row of its own."""

    name = "augment"
    reads = (columns.KEY, columns.MEDIA)
    writes = tuple(_FIELDS.names)
    members: ClassVar[dict[str, str]] = {"frames": "frames.jpg"}
    Params = AugmentParams
    resources: ClassVar[Resources] = Resources(cpus=1.0)
    batch_size = 8
    expands = True

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """The original and its copies for every row; with no augmentation listed, the rows as they are."""
        return self.map_rows(batch, self._row, fields=_FIELDS)

    def _row(self, row: dict[str, Any]) -> list[RowResult]:
        p = self.params
        if not p.augmentations:
            return [{}]
        data, key = row.get(columns.MEDIA), row[columns.KEY]
        if not data:
            raise Rejected("augment:no_media: the row has no image in `media`; fix: run face_crop or "
                           "image_standardize before augment")
        image = decode_upright(data, max_pixels=Image.MAX_IMAGE_PIXELS)
        face = row.get("face_box")
        box = (face["x"], face["y"], face["w"], face["h"]) if face else None
        side = _thumb_side(row.get("frames"))
        # PNG stays lossless; any other input (JPEG, WebP) gives JPEG copies, named so in `media_ext`.
        image_format = "png" if row.get(columns.MEDIA_EXT) == "png" else "jpeg"
        out = [{columns.KEY: columns.child_key(key, INDEX["none"]), columns.PARENT: key, "augmentation": "none"}]
        for name in p.augmentations:
            rng = np.random.default_rng(int.from_bytes(hashlib.sha1(f"{key}:{name}".encode()).digest()[:8], "big"))
            copy, copy_box = self._apply(name, image, box, rng)
            out.append({
                columns.KEY: columns.child_key(key, INDEX[name]), columns.PARENT: key, "augmentation": name,
                columns.MEDIA: encode(copy, image_format, p.quality), columns.MEDIA_EXT: EXTENSIONS[image_format],
                "face_box": _box_row(copy_box) if copy_box is not None else None,
                "frames": [thumbnail(copy, side)] if side else None,
            })
        return out

    def _apply(self, name: str, image: Image.Image, box: Box | None,
               rng: np.random.Generator) -> tuple[Image.Image, Box | None]:
        """The augmented copy of `image` and where the face box went."""
        w = image.width
        if name == "flip":
            return ImageOps.mirror(image), None if box is None else (w - box[0] - box[2], box[1], box[2], box[3])
        if name == "crop_jitter":
            return jitter_crop(image, box, self.params.jitter, rng)
        factors = rng.uniform(1 - self.params.color, 1 + self.params.color, size=3)
        for enhancer, factor in zip((ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color), factors,
                                    strict=True):
            image = enhancer(image).enhance(float(factor))
        return image, box


def jitter_crop(image: Image.Image, box: Box | None, jitter: float,
                rng: np.random.Generator) -> tuple[Image.Image, Box | None]:
    """A window of `image` up to `jitter` smaller per side, placed at random with `box` inside when it fits,
    resampled back to the image's size; returns it and `box` in its pixels."""
    w, h = image.size
    scale = rng.uniform(1 - jitter, 1)
    cw, ch = w * scale, h * scale
    x_lo, x_hi, y_lo, y_hi = 0.0, w - cw, 0.0, h - ch
    if box is not None:  # narrow the range of corners to those whose window holds the face, when any does
        bx_lo, bx_hi = max(x_lo, box[0] + box[2] - cw), min(x_hi, box[0])
        by_lo, by_hi = max(y_lo, box[1] + box[3] - ch), min(y_hi, box[1])
        if bx_lo <= bx_hi and by_lo <= by_hi:
            x_lo, x_hi, y_lo, y_hi = bx_lo, bx_hi, by_lo, by_hi
    x, y = rng.uniform(x_lo, x_hi), rng.uniform(y_lo, y_hi)
    out = image.resize((w, h), Image.Resampling.LANCZOS, box=(x, y, x + cw, y + ch))
    if box is None:
        return out, None
    k = 1 / scale  # window px -> output px
    x0, y0 = max(0.0, (box[0] - x) * k), max(0.0, (box[1] - y) * k)
    x1, y1 = min(w, (box[0] + box[2] - x) * k), min(h, (box[1] + box[3] - y) * k)
    return out, (x0, y0, x1 - x0, y1 - y0)


def _thumb_side(frames: list[bytes] | None) -> int | None:
    """The longer side (px) of a row's first thumbnail, which its copies' thumbnails get; None without one."""
    if not frames:
        return None
    with Image.open(io.BytesIO(frames[0])) as first:  # the header only: no pixels decoded
        return max(first.size)


def _box_row(box: Box) -> dict[str, int]:
    x, y, w, h = box
    return {"x": round(x), "y": round(y), "w": round(w), "h": round(h)}
