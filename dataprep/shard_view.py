"""`dataprep inspect`: what a shard holds, read with the webdataset library as a trainer would."""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from dataprep import storage


def read_samples(shard: str) -> list[dict[str, Any]]:
    """Every sample of a shard as webdataset yields it: `__key__` and one entry per file extension."""
    import webdataset as wds

    with storage.open_local(shard) as path:
        dataset = wds.WebDataset(path, shardshuffle=False, empty_check=False)
        return [dict(sample) for sample in dataset]


def print_shard(shard: str) -> int:
    """One line per sample: key, files and sizes, caption."""
    samples = read_samples(shard)
    print(f"{shard}: {len(samples)} samples")
    for sample in samples:
        files = ", ".join(f"{ext} {len(v)} B" for ext, v in sample.items() if not ext.startswith("__"))
        caption = sample.get("txt", b"").decode("utf-8", errors="replace")[:60]
        print(f"  {sample['__key__']}: {files}  {caption!r}")
    return 0


def print_sample(shard: str, key: str) -> int:
    """A sample's metadata, caption and files."""
    for sample in read_samples(shard):
        if sample["__key__"] != key:
            continue
        meta = json.loads(sample["json"]) if "json" in sample else {}
        out: dict[str, Any] = OrderedDict(key=key)
        out["files"] = {ext: len(v) for ext, v in sample.items() if not ext.startswith("__")}
        out["caption"] = sample.get("txt", b"").decode("utf-8", errors="replace")
        out["metadata"] = meta
        print(json.dumps(out, indent=1, ensure_ascii=False))
        return 0
    print(f"error: no sample with key {key!r} in {shard}; run `dataprep inspect {shard}` to list keys")
    return 2
