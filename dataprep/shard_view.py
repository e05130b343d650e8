"""What a shard holds, read with the webdataset library as a trainer would (for `dataprep inspect`)."""

from __future__ import annotations

import json
from typing import Any

from dataprep import storage


def read_samples(shard: str) -> list[dict[str, Any]]:
    """Every sample of a shard as webdataset yields it: `__key__` and one entry per file extension."""
    import webdataset as wds

    with storage.open_local(shard) as path:
        dataset = wds.WebDataset(path, shardshuffle=False, empty_check=False)
        return [dict(sample) for sample in dataset]


def _files(sample: dict[str, Any]) -> dict[str, int]:
    return {ext: len(v) for ext, v in sample.items() if not ext.startswith("__")}


def _caption(sample: dict[str, Any]) -> str:
    return sample.get("txt", b"").decode("utf-8", errors="replace")


def shard_listing(shard: str) -> list[dict[str, Any]]:
    """Per sample: its key, file sizes by extension and caption."""
    return [{"key": s["__key__"], "files": _files(s), "caption": _caption(s)} for s in read_samples(shard)]


def sample_detail(shard: str, key: str) -> dict[str, Any] | None:
    """One sample's files, caption and metadata; None when the shard has no such key."""
    for sample in read_samples(shard):
        if sample["__key__"] == key:
            meta = json.loads(sample["json"]) if "json" in sample else {}
            return {"key": key, "files": _files(sample), "caption": _caption(sample), "metadata": meta}
    return None
