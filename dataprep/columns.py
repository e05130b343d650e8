"""Column names the runner gives meaning to, and how sample keys are made."""

from __future__ import annotations

import hashlib
import math
import re

KEY = "key"
SOURCE = "source"
# Reason a row is removed; null on rows that go on.
REJECT = "_reject"
# For duplicates: the key of the row that was kept in its place.
DUPLICATE_OF = "_duplicate_of"
# The key of the row a row was split from (scene split); null for unsplit rows.
PARENT = "parent_key"
MEDIA = "media"
MEDIA_EXT = "media_ext"
CAPTION = "caption"

RESERVED = (REJECT, DUPLICATE_OF)

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
# A key safe as a file name: also matched by Arrow (RE2) to check a whole column at once.
SAFE_KEY = r"^[A-Za-z0-9_-]{1,200}$"
_KEY = re.compile(SAFE_KEY)


def source_key(uri: str, *, stem: str | None = None) -> str:
    """A deterministic key for a source URI: a readable slug of its name plus a hash of the URI.

    The hash covers the whole URI, so two files with one name in different folders differ.
    """
    name = stem if stem is not None else uri.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0]
    slug = _UNSAFE.sub("_", name).strip("_")[:40] or "item"
    digest = hashlib.sha1(uri.encode("utf-8")).hexdigest()[:12]
    return f"{slug}-{digest}"


def child_key(parent: str, index: int) -> str:
    """The key of the index-th row split from `parent` (a clip of a video)."""
    return f"{parent}_c{index:04d}"


def is_safe_key(key: str) -> bool:
    """Whether `key` can name a tar member without escaping its shard or confusing readers."""
    return bool(_KEY.match(key))


def json_value(value: object) -> object:
    """`value` as JSON can hold it: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def safe_key(key: str) -> str:
    """`key` if it is safe as a file name, else a safe slug of it plus a hash of the original."""
    if is_safe_key(key):
        return key
    slug = _UNSAFE.sub("_", key).strip("_")[:40] or "item"
    return f"{slug}-{hashlib.sha1(key.encode('utf-8')).hexdigest()[:12]}"
