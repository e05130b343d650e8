"""Which file extensions are videos and which are images, and the media type of a row with no file."""

from __future__ import annotations

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
# Files that travel beside media (captions, metadata, manifests) and are not samples themselves.
SIDECAR_EXTENSIONS = (".txt", ".json", ".jsonl", ".csv", ".parquet", ".md", ".yaml", ".yml")
# `media_type` of a row of a text-only dataset: its caption is the whole sample, there is no file.
TEXT = "text"


def extension(uri: str) -> str:
    """The lower-case extension of a path or URI, with its dot ('' if none)."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


def media_type_of(uri: str) -> str | None:
    """'video' or 'image' by extension; None for anything else."""
    ext = extension(uri)
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    return None
