"""dataprep.loader: shards with latents and text embeddings stream into one-shape batches."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest

from dataprep.loader import make_dataset, make_loader
from dataprep.sink import ShardWriter

_LATENT_SHAPES = [(4, 2, 8, 8), (4, 3, 6, 10)]


def _latent(i: int) -> np.ndarray:
    return np.full(_LATENT_SHAPES[i % 2], i, np.float16)


def _write_job(output, n: int = 22) -> None:
    """A job output as the sink writes it: latents of two shapes in two bucket folders, padded T5 embeddings."""
    tokens = [1 + i % 7 for i in range(n)]
    emb = [np.where(np.arange(8)[:, None] < t, i, 0).astype(np.float16) * np.ones((8, 5), np.float16)
           for i, t in enumerate(tokens)]
    table = pa.table({
        "key": [f"clip-{i:03d}" for i in range(n)],
        "source": [f"/src/{i}.mp4" for i in range(n)],
        "caption": [f"caption {i}" for i in range(n)],
        "bucket": ["64x64" if i % 2 == 0 else "80x48" for i in range(n)],
        "latent": pa.array([_latent(i).ravel() for i in range(n)], pa.list_(pa.float16())),
        "t5_embedding": pa.array([e.tolist() for e in emb], pa.list_(pa.list_(pa.float16()))),
        "t5_tokens": pa.array(tokens, pa.int32()),
        "media": pa.array([b"x"] * n, pa.large_binary()),
        "media_ext": ["mp4"] * n,
    })
    # Flat lists do not say their shape; the stages write fixed-shape tensors, so the test does too.
    latents = [pa.FixedShapeTensorArray.from_numpy_ndarray(np.stack([_latent(i) for i in range(n) if i % 2 == k]))
               for k in (0, 1)]
    counter = itertools.count()
    writer = ShardWriter(str(output), max_samples=5, max_bytes=10**9, next_index=lambda: next(counter),
                         bucket_path="{bucket}")
    for k in (0, 1):
        part = table.filter(pa.array([i % 2 == k for i in range(n)]))
        writer.write_table(part.set_column(part.schema.get_field_index("latent"), "latent", latents[k]))
    writer.close()


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    folder = tmp_path_factory.mktemp("job")
    _write_job(folder)
    return folder


def test_every_sample_once_in_one_shape_batches_with_masks(output):
    loader = make_loader(str(output), batch_size=4, num_workers=2, arrays=("latent", "t5_embedding"),
                         masks={"t5_embedding": "t5_tokens"}, shuffle=8, seed=1)
    seen = []
    for batch in loader:
        latent = batch["latent"]
        assert latent.dtype.is_floating_point and str(latent.dtype) == "torch.float16"
        assert tuple(latent.shape[1:]) in _LATENT_SHAPES and latent.shape[0] == len(batch["key"]) <= 4
        for j, key in enumerate(batch["key"]):
            i = int(key.split("-")[1])
            assert latent[j].shape == _LATENT_SHAPES[i % 2] and float(latent[j].flatten()[0]) == i
            tokens = batch["meta"][j]["t5_tokens"]
            mask = batch["t5_embedding_mask"][j]
            assert int(mask.sum()) == tokens and bool(mask[:tokens].all())
            assert batch["caption"][j] == f"caption {i}"
            seen.append(key)
    assert sorted(seen) == [f"clip-{i:03d}" for i in range(22)]


def test_shuffle_changes_order_and_is_seeded(output):
    def order(seed):
        return [k for b in make_dataset(str(output), 4, shuffle=8, seed=seed) for k in b["key"]]

    assert order(3) == order(3)
    assert order(3) != [k for b in make_dataset(str(output), 4, shuffle=0) for k in b["key"]]


def test_missing_member_and_bad_mask_name_the_fix(output, tmp_path):
    with pytest.raises(KeyError, match="no member 'vae.npy'"):
        next(iter(make_dataset(str(output), 2, arrays=("vae",), shuffle=0)))
    with pytest.raises(ValueError, match="not in `arrays`"):
        make_dataset(str(output), 2, arrays=("latent",), masks={"t5_embedding": "t5_tokens"})
    with pytest.raises(FileNotFoundError, match="no committed shard"):
        make_dataset(str(tmp_path / "empty"), 2)
