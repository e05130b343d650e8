"""What a shard holds, read with the webdataset library as a trainer would (for `dataprep inspect`)."""

from __future__ import annotations

import json
import os
import tarfile
from typing import Any

from dataprep import paths, storage

_FIX = f"fix: pass a shard's .tar, e.g. OUTPUT/{paths.shard_path('', 0)}"


class NotAShardError(ValueError):
    """The path given as a shard is missing, a folder, or not a tar file."""


def _check_local(shard: str) -> None:
    path = storage.local_path(shard)
    if os.path.isdir(path):
        tars = [p for p in storage.list_files(path) if p.endswith(".tar")]
        fix = f"fix: pass one of its {len(tars)} shards, e.g. {tars[0]}" if tars else _FIX
        raise NotAShardError(f"shard {shard!r} is a folder, not a .tar file; {fix}")
    if not os.path.exists(path):
        raise NotAShardError(f"shard {shard!r} does not exist; {_FIX}")


def read_samples(shard: str) -> list[dict[str, Any]]:
    """Every sample of a shard as webdataset yields it: `__key__` and one entry per file extension."""
    import webdataset as wds

    if storage.is_s3(shard):
        if not storage.exists(shard):
            raise NotAShardError(f"shard {shard!r} does not exist; {_FIX}")
    else:
        _check_local(shard)
    with storage.open_local(shard) as path:
        if not tarfile.is_tarfile(path):
            raise NotAShardError(f"shard {shard!r} is not a tar file (a WebDataset shard is one); {_FIX}")
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


def extract(shard: str, folder: str, key: str | None = None) -> list[str]:
    """Write every member of one sample (or of every sample) as `KEY.<member>` files into `folder`.

    Returns the paths written; an empty list when `key` is not in the shard.
    """
    written = []
    for sample in read_samples(shard):
        if key is not None and sample["__key__"] != key:
            continue
        os.makedirs(folder, exist_ok=True)
        for ext, data in sample.items():
            if ext.startswith("__"):
                continue
            # A tar made elsewhere may name members with folders; they must not escape `folder`.
            name = f"{sample['__key__']}.{ext}".replace("/", "_").replace(os.sep, "_")
            path = os.path.join(folder, name)
            with open(path, "wb") as f:
                f.write(data)
            written.append(path)
    return written
