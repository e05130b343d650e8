"""What a VLM is asked for one row: its pictures, in order, and the prompt rendered from the config's template.

The template is a `str.format` string over the fields in `PROMPT_FIELDS`, e.g.

    prompt: "Describe this {media} in detail. Its old caption, possibly wrong: {caption}"

A video gives its `frame_sample` thumbnails (evenly thinned to `max_images`); an image gives
its one thumbnail, or its full `media` bytes when the stage reads them. Every backend asks from
the same `VlmRequest`, so the transformers, vLLM and HTTP backends see the same pictures and text.
"""

from __future__ import annotations

import base64
import io
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dataprep import columns
from dataprep.errors import Rejected

if TYPE_CHECKING:
    from PIL import Image

# Template fields and what they hold; a literal brace in a template is doubled ({{ }}).
PROMPT_FIELDS = {
    "media": '"image" or "video"',
    "caption": "the original caption (empty when there is none)",
    "num_frames": "pictures given to the model",
    "duration": "the clip's length in seconds (empty when unknown)",
}


@dataclass(frozen=True)
class VlmRequest:
    """One row's question: RGB pictures (frames of one video, in time order, when `video`) and the prompt."""

    images: list[Image.Image]
    video: bool
    prompt: str
    system: str | None = None
    # The clip's length (s) the frames were sampled over, when known.
    seconds: float | None = None


def template_problem(template: str) -> str | None:
    """Why `template` cannot be rendered (an unknown field, an unpaired brace), or None."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        return f"{exc}; write a literal brace as {{{{ or }}}}"
    unknown = sorted(f for f in fields if f not in PROMPT_FIELDS)
    if unknown:
        return f"unknown field(s) {unknown}; known: {sorted(PROMPT_FIELDS)}"
    return None


def clip_seconds(row: dict[str, Any]) -> float | None:
    """The length (s) of what `frame_sample` sampled: the clip, else the scene of the source, else the source."""
    start, end = row.get("scene_start"), row.get("scene_end")
    if row.get(columns.MEDIA) is None and start is not None and end is not None:
        seconds = end - start
    else:
        seconds = row.get("duration")
    return float(seconds) if isinstance(seconds, (int, float)) and seconds > 0 else None


def render_prompt(template: str, row: dict[str, Any], num_frames: int) -> str:
    """The prompt for `row`: `template` with its fields filled in."""
    seconds = clip_seconds(row)
    return template.format(
        media="video" if row.get("media_type") == "video" else "image",
        caption=(row.get(columns.CAPTION) or "").strip(),
        num_frames=num_frames,
        duration=f"{seconds:.1f}" if seconds is not None else "",
    )


def build_request(
    row: dict[str, Any], *, template: str, system: str | None, max_images: int, max_side: int, use_media: bool,
) -> VlmRequest:
    """The request for one row; a row without decodable pictures is rejected (`vlm:no_frames`, `vlm:bad_frame`,
    `vlm:bad_media`)."""
    video = row.get("media_type") == "video"
    if use_media and not video and row.get(columns.MEDIA) is not None:
        images = [_decode(row[columns.MEDIA], "media", max_side, code="vlm:bad_media")]
    else:
        frames = row.get("frames")
        if not frames:
            raise Rejected("vlm:no_frames: the row has no thumbnails; fix: run frame_sample before vlm_caption")
        frames = _thin(list(frames), max_images)
        images = [_decode(data, f"frames[{i}]", max_side, code="vlm:bad_frame") for i, data in enumerate(frames)]
    return VlmRequest(images=images, video=video and len(images) > 1, prompt=render_prompt(template, row, len(images)),
                      system=system, seconds=clip_seconds(row))


def _thin(items: list[Any], most: int) -> list[Any]:
    """At most `most` of `items`, evenly spread and in order."""
    if len(items) <= most:
        return items
    return [items[(k * len(items)) // most] for k in range(most)]


def _decode(data: bytes | None, what: str, max_side: int, *, code: str) -> Image.Image:
    """The picture in `data`, upright, RGB, its longer side at most `max_side`; else the row is rejected with `code`."""
    from PIL import Image, ImageOps

    if not data:
        raise Rejected(f"{code}: {what} is empty")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad bytes; all mean "not a picture"
        raise Rejected(f"{code}: {what} is not a decodable image ({type(exc).__name__})") from None
    image.thumbnail((max_side, max_side))  # only ever shrinks: bounds the visual tokens per picture
    return image


def data_uri(image: Image.Image, quality: int = 90) -> str:
    """`image` as a `data:image/jpeg;base64,...` URI, the form OpenAI-compatible servers accept inline."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def chat_messages(request: VlmRequest, *, as_video: bool) -> list[dict[str, Any]]:
    """The request as the chat messages a Hugging Face processor's template takes (placeholders, no pixels).

    `as_video` puts a video's frames in as one video part; otherwise each picture is an image part.
    """
    parts = [{"type": "video"}] if as_video and request.video else [{"type": "image"} for _ in request.images]
    messages = [{"role": "system", "content": [{"type": "text", "text": request.system}]}] if request.system else []
    return [*messages, {"role": "user", "content": [*parts, {"type": "text", "text": request.prompt}]}]


def openai_messages(request: VlmRequest) -> list[dict[str, Any]]:
    """The request as OpenAI chat messages: pictures as `image_url` data URIs, then the prompt.

    The OpenAI schema has no video part, so a video's frames go as several images in order.
    """
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": data_uri(image)}}
                                      for image in request.images]
    content.append({"type": "text", "text": request.prompt})
    messages: list[dict[str, Any]] = [{"role": "system", "content": request.system}] if request.system else []
    return [*messages, {"role": "user", "content": content}]
