"""A PyTorch loader for training on a job's shards: precomputed latents, text embeddings and captions.

    from dataprep.loader import make_loader
    loader = make_loader("out/t2v", batch_size=8, arrays=("latent", "t5_embedding"),
                         masks={"t5_embedding": "t5_tokens"}, num_workers=2, shuffle=1000)
    for batch in loader:
        batch["latent"]              # float16 (B, C, T, H, W): one shape per batch
        batch["t5_embedding"]        # float16 (B, L, D), padded to the stage's max_tokens
        batch["t5_embedding_mask"]   # bool (B, L): True on the real tokens
        batch["caption"], batch["key"], batch["meta"]

Each sample's `.npy` members named in `arrays` become tensors; a batch holds samples whose
arrays all have the same shapes (a bucket folder of `sink.bucket_path` holds one shape, and
samples are grouped again here, so mixed folders work too). Shards are shuffled, then samples
within a buffer; each DataLoader worker (and each rank under torch.distributed) reads its own shards.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from dataprep import reader

_META, _CAPTION = "json", "txt"


def decode_arrays(sample: dict[str, Any], *, arrays: tuple[str, ...],
                  masks: Mapping[str, str]) -> dict[str, Any]:
    """One WebDataset sample as tensors: each of `arrays` from its `.npy` member, plus masks and text.

    A mask `NAME_mask` is True on the first `meta[masks[NAME]]` positions of the array's first axis.
    """
    import numpy as np
    import torch

    key = sample["__key__"]
    meta = json.loads(sample[_META]) if _META in sample else {}
    out: dict[str, Any] = {"key": key, "meta": meta,
                           "caption": sample[_CAPTION].decode("utf-8") if _CAPTION in sample else None}
    for name in arrays:
        member = f"{name}.npy"
        if member not in sample:
            raise KeyError(f"sample {key!r} has no member {member!r} (has {sorted(m for m in sample if m[:2] != '__')}); "
                           f"fix: run the stage that writes {name!r}, or leave it out of `arrays`")
        out[name] = torch.from_numpy(np.load(io.BytesIO(sample[member]), allow_pickle=False))
    for name, count_column in masks.items():
        if count_column not in meta:
            raise KeyError(f"sample {key!r} has no {count_column!r} in its metadata for the mask of {name!r}")
        mask = torch.zeros(out[name].shape[0], dtype=torch.bool)
        mask[: int(meta[count_column])] = True
        out[f"{name}_mask"] = mask
    return out


def _shape_key(sample: dict[str, Any], arrays: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(sample[name].shape) for name in arrays)


def batches_of_one_shape(samples: Iterable[dict[str, Any]], batch_size: int, arrays: tuple[str, ...],
                         masks: Mapping[str, str]) -> Iterator[dict[str, Any]]:
    """Batches of up to `batch_size` samples whose arrays share their shapes, stacked.

    Samples wait per shape; once 16 batches' worth wait, the fullest group goes out early,
    so inputs of many shapes cannot fill memory.
    """
    import torch

    stacked = (*arrays, *(f"{name}_mask" for name in masks))

    def collate(group: list[dict[str, Any]]) -> dict[str, Any]:
        batch = {name: torch.stack([s[name] for s in group]) for name in stacked}
        return {**batch, **{f: [s[f] for s in group] for f in ("key", "caption", "meta")}}

    return reader.group_batches(samples, batch_size, functools.partial(_shape_key, arrays=arrays), collate)


def make_dataset(output: str, batch_size: int, *, arrays: tuple[str, ...] = ("latent",),
                 masks: Mapping[str, str] | None = None, shuffle: int = 1000, seed: int = 0) -> Any:
    """An iterable (a webdataset pipeline, a torch IterableDataset) of batches from `output`'s committed shards."""
    import webdataset as wds
    from webdataset.gopen import gopen_schemes

    masks = dict(masks or {})
    unknown = sorted(set(masks) - set(arrays))
    if unknown:
        raise ValueError(f"`masks` names {unknown}, which are not in `arrays` {list(arrays)}; fix: add them to `arrays`")
    urls = [url for shards in reader.list_shards(output).values() for url in shards]
    if not urls:
        raise FileNotFoundError(f"no committed shard under {output!r}; fix: pass the `output` of a job that wrote shards")
    gopen_schemes.setdefault("s3", reader.open_s3)
    dataset = wds.WebDataset(urls, shardshuffle=len(urls) if shuffle else False, seed=seed,
                             nodesplitter=wds.split_by_node, workersplitter=wds.split_by_worker, empty_check=False)
    if shuffle:
        dataset = dataset.shuffle(shuffle, seed=seed)
    # Partials, not lambdas: a DataLoader that spawns its workers pickles the pipeline.
    return dataset.map(functools.partial(decode_arrays, arrays=tuple(arrays), masks=masks)).compose(
        functools.partial(batches_of_one_shape, batch_size=batch_size, arrays=tuple(arrays), masks=masks))


def make_loader(output: str, batch_size: int, *, num_workers: int = 2, arrays: tuple[str, ...] = ("latent",),
                masks: Mapping[str, str] | None = None, shuffle: int = 1000, seed: int = 0) -> Any:
    """A torch DataLoader over `make_dataset`: batches come whole from the workers (batch_size=None)."""
    from torch.utils.data import DataLoader

    dataset = make_dataset(output, batch_size, arrays=arrays, masks=masks, shuffle=shuffle, seed=seed)
    return DataLoader(dataset, batch_size=None, num_workers=num_workers,
                      persistent_workers=False, prefetch_factor=2 if num_workers else None)
