"""Reading a job's shards for training: list them, decode samples to tensors, batch by bucket.

    from dataprep.reader import read_batches
    for batch in read_batches("out/t2v", batch_size=4, shuffle=1000, num_frames=48):
        batch["media"]                           # uint8 (B, T, H, W, C); an image is one frame: T == 1
        batch["bucket"], batch["key"], batch["caption"], batch["meta"]   # str; lists of B

A shard is read once it is committed (its `.stats.json` exists), so this works while
a job still runs. The pieces are public for loaders built on them (latents, embeddings):
`list_shards` (bucket -> shard URIs, local or s3://), `decode_sample` (one WebDataset
sample to tensors), `batch_by_bucket` (groups that stack), `collate`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from dataprep import paths, storage

if TYPE_CHECKING:
    import torch

# Members the sink writes beside the media: metadata and the caption.
_META, _CAPTION = "json", "txt"


def list_shards(output: str) -> dict[str, list[str]]:
    """Committed shards of a job's output, by bucket folder ("" for shards outside one), sorted.

    A tar without its `.stats.json` is still being written (or was left by a killed
    run) and is not listed.
    """
    root = paths.under(output, paths.SHARDS_DIR)
    found = set(storage.list_files(root))
    by_bucket: dict[str, list[str]] = {}
    for uri in sorted(found):
        if uri.endswith(".tar") and paths.stats_path(uri) in found:
            by_bucket.setdefault(bucket_of(uri), []).append(uri)
    return by_bucket


def bucket_of(shard: str) -> str:
    """The bucket folder of a shard URI (`shards/640x360/f121/shard-000002.tar` -> "640x360/f121"), "" when none."""
    folder = shard.rsplit("/", 1)[0] if "/" in shard else ""
    marker = f"/{paths.SHARDS_DIR}/"
    if marker not in f"/{folder}/":
        return ""
    return f"/{folder}/".rsplit(marker, 1)[1].strip("/")


def decode_sample(sample: dict[str, Any], *, num_frames: int | None = None) -> dict[str, Any]:
    """One sample as webdataset yields it, decoded: `media` a uint8 tensor (T, H, W, C), RGB.

    A video gives its frames (the first `num_frames` of them when set, so clips of
    one bucket stack); an image gives one frame, (1, H, W, C), so images and clips
    batch alike. A text-only sample has `media` None. Members other than the media,
    metadata and caption are kept as bytes under `members` (e.g. `latent.npy`).
    """
    meta = json.loads(sample[_META]) if _META in sample else {}
    caption = sample[_CAPTION].decode("utf-8") if _CAPTION in sample else None
    media_member = next((m for m in sample if "." not in m and not m.startswith("__") and m not in (_META, _CAPTION)),
                        None)
    media = None
    if media_member is not None:
        data = sample[media_member]
        media = _decode_image(data) if meta.get("media_type") == "image" else _decode_video(data, num_frames)
    members = {m: v for m, v in sample.items() if not m.startswith("__") and m not in (_META, _CAPTION, media_member)}
    return {"key": sample["__key__"], "bucket": bucket_of(sample.get("__url__", "")), "media": media,
            "caption": caption, "meta": meta, "members": members}


def _decode_video(data: bytes, num_frames: int | None) -> torch.Tensor:
    import io

    import av
    import numpy as np
    import torch

    frames = []
    with av.open(io.BytesIO(data)) as container:
        # A shard's clip was written by standardize with a single video stream; no choice to make.
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))  # (H, W, C)
            if num_frames is not None and len(frames) == num_frames:
                break
    if not frames:
        raise ValueError("the clip decodes to no frame")
    return torch.from_numpy(np.stack(frames))  # (T, H, W, C)


def _decode_image(data: bytes) -> torch.Tensor:
    import io

    import numpy as np
    import torch
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as img:
        # Upright as displayed, like probe's width and height: EXIF orientation applied.
        rgb = ImageOps.exif_transpose(img).convert("RGB")
        return torch.from_numpy(np.asarray(rgb).copy())[None]  # (1, H, W, C)


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Decoded samples of one shape as one batch: `media` stacked to (B, T, H, W, C), the rest as lists."""
    import torch

    first = samples[0]
    media = torch.stack([s["media"] for s in samples]) if first["media"] is not None else None
    return {"bucket": first["bucket"], "media": media, **{f: [s[f] for s in samples]
                                                           for f in ("key", "caption", "meta", "members")}}


def batch_by_bucket(samples: Iterable[dict[str, Any]], batch_size: int, *,
                    max_pending: int | None = None) -> Iterator[dict[str, Any]]:
    """Batches of up to `batch_size` decoded samples that share a bucket and a media shape.

    Samples wait per (bucket, shape) until `batch_size` of them are there; what is
    left at the end comes out as smaller batches. The bucket alone is not enough:
    images of a job without buckets differ in size, clips differ in length unless
    `num_frames` is set. When more than `max_pending` (default 16 batches) wait, the
    fullest group goes out early, so inputs of many shapes cannot fill memory.
    """
    def shape_of(sample: dict[str, Any]) -> Any:
        return sample["bucket"], tuple(sample["media"].shape) if sample["media"] is not None else None

    return group_batches(samples, batch_size, shape_of, collate, max_pending=max_pending)


def group_batches(samples: Iterable[dict[str, Any]], batch_size: int, key: Any, make_batch: Any, *,
                  max_pending: int | None = None) -> Iterator[dict[str, Any]]:
    """`make_batch` of up to `batch_size` samples with equal `key(sample)`, in arrival order per key.

    When more than `max_pending` (default 16 batches) wait, the fullest group goes out early, so inputs of
    many keys cannot fill memory; what is left at the end comes out as smaller batches.
    """
    if batch_size <= 0:
        raise ValueError(f"`batch_size` must be > 0, got {batch_size}")
    limit = max_pending if max_pending is not None else 16 * batch_size
    pending: dict[Any, list[dict[str, Any]]] = {}
    waiting = 0
    for sample in samples:
        group = pending.setdefault(key(sample), [])
        group.append(sample)
        waiting += 1
        if len(group) == batch_size or waiting > limit:
            fullest = group if len(group) == batch_size else max(pending.values(), key=len)
            waiting -= len(fullest)
            yield make_batch(fullest)
            fullest.clear()
    for group in pending.values():
        if group:
            yield make_batch(group)


def read_batches(output: str, batch_size: int, *, shuffle: int = 0, num_frames: int | None = None,
                 seed: int = 0) -> Iterable[dict[str, Any]]:
    """Batches of a job's committed shards, one bucket and shape each (see `batch_by_bucket`).

    `shuffle` > 0 shuffles the shards and then samples within a buffer of that many
    (0 keeps file order). Under `torch.distributed` each rank reads its own shards,
    and in a `DataLoader(..., batch_size=None)` each worker its own.
    """
    import webdataset as wds
    from webdataset.gopen import gopen_schemes

    urls = [url for shards in list_shards(output).values() for url in shards]
    if not urls:
        raise FileNotFoundError(f"no committed shard under {paths.under(output, paths.SHARDS_DIR)!r}; "
                                "fix: pass the `output` of a job that has written shards")
    # S3 shards are read through dataprep's storage (boto3, AWS_ENDPOINT_URL), the same way jobs write them.
    gopen_schemes.setdefault("s3", open_s3)
    dataset = wds.WebDataset(urls, shardshuffle=len(urls) if shuffle else False, seed=seed,
                             nodesplitter=wds.split_by_node, empty_check=False)
    if shuffle:
        dataset = dataset.shuffle(shuffle, seed=seed)
    # Partials, not lambdas: a DataLoader that spawns its workers pickles the pipeline.
    return dataset.map(functools.partial(decode_sample, num_frames=num_frames)).compose(
        functools.partial(batch_by_bucket, batch_size=batch_size))


def open_s3(url: str, mode: str = "rb", bufsize: int = 8192, **_: Any) -> Any:
    """A webdataset gopen handler for s3:// shards: the shard downloaded to a temporary file, open for reading."""
    with storage.open_local(url) as path:
        # The open file outlives its name: the download is removed once the reader closes it.
        return open(path, "rb")  # noqa: SIM115 - webdataset closes the stream it is given
