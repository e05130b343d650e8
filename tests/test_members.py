"""Shards carry any column: arrays as .npy (dtype and shape kept), thumbnails, several texts, metadata."""

from __future__ import annotations

import hashlib
import io
import itertools
import json

import numpy as np
import pyarrow as pa
import pytest
import webdataset as wds
from PIL import Image

from dataprep.config import parse_config
from dataprep.errors import ConfigError
from dataprep.members import declared_members
from dataprep.plan import build_plan
from dataprep.sink import ShardWriter
from dataprep.stage import Stage


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), colour).save(buf, format="JPEG")
    return buf.getvalue()


class Latents(Stage):
    """A model stage's outputs: a fixed-shape latent, a ragged-per-row text embedding, a second caption."""

    name = "latents"
    writes = ("latent", "t5", "caption_vlm")
    members = {"latent": "latent.npy", "t5": "t5.npy", "caption_vlm": "vlm.txt"}


def _table(rng: np.random.Generator) -> tuple[pa.Table, dict[str, dict]]:
    keys = [f"s{i}" for i in range(3)]
    latents = rng.standard_normal((3, 4, 2, 8, 8)).astype(np.float16)  # (N, C, T, H, W)
    # One text embedding per row, each its own token count: (tokens, dim) float32.
    t5 = [rng.standard_normal((n, 6)).astype(np.float32) for n in (5, 2, 7)]
    clip = rng.standard_normal((3, 16)).astype(np.float32)
    thumbs = [[_jpeg((200, 10 * i, 0)), _jpeg((0, 10 * i, 200))] for i in range(3)]
    table = pa.table({
        "key": keys,
        "source": [f"/src/{k}.mp4" for k in keys],
        "media": pa.array([b"clip" + k.encode() for k in keys], pa.large_binary()),
        "media_ext": ["mp4"] * 3,
        "caption": [f"alt text {k}" for k in keys],
        "caption_vlm": [f"a dense caption of {k}" for k in keys],
        "aesthetic": pa.array([5.5, 6.0, 4.25], pa.float32()),
        "latent": pa.FixedShapeTensorArray.from_numpy_ndarray(latents),
        "t5": pa.array([x.tolist() for x in t5], pa.list_(pa.list_(pa.float32()))),
        "clip": pa.array(clip.tolist(), pa.list_(pa.float32(), 16)),
        "frames": pa.array(thumbs, pa.list_(pa.binary())),
        "tags": pa.array([{"lang": "en", "n": i} for i in range(3)]),
    })
    expected = {k: {"latent": latents[i], "t5": t5[i], "clip": clip[i], "frames": thumbs[i]} for i, k in enumerate(keys)}
    return table, expected


def _write(folder, table: pa.Table) -> list[str]:
    counter = itertools.count()
    members = declared_members([Latents(), _frames_stage()])
    writer = ShardWriter(str(folder), max_samples=10, max_bytes=10**9, next_index=lambda: next(counter),
                         members=members)
    writer.write_table(table)
    return [str(folder / s) for s in writer.close()]


def _frames_stage() -> Stage:
    class Frames(Stage):
        name = "frames_like"
        writes = ("frames",)
        members = {"frames": "frames.jpg"}

    return Frames()


def test_arrays_thumbnails_and_texts_read_back_with_plain_webdataset(tmp_path):
    table, expected = _table(np.random.default_rng(0))
    shards = _write(tmp_path, table)
    samples = list(wds.WebDataset(shards, shardshuffle=False).decode())
    assert [s["__key__"] for s in samples] == ["s0", "s1", "s2"]
    for sample in samples:
        want = expected[sample["__key__"]]
        for name in ("latent", "t5", "clip"):
            got = sample[f"{name}.npy"]
            assert got.dtype == want[name].dtype and got.shape == want[name].shape, name
            assert got.tobytes() == want[name].tobytes(), name
        assert sample["latent.npy"].dtype == np.float16 and sample["latent.npy"].shape == (4, 2, 8, 8)
        assert [sample[f"frames.{i}.jpg"] for i in range(2)] == want["frames"]
        assert sample["txt"] == f"alt text {sample['__key__']}"
        assert sample["vlm.txt"] == f"a dense caption of {sample['__key__']}"
        assert sample["mp4"] == b"clip" + sample["__key__"].encode()
        meta = sample["json"]
        assert meta["aesthetic"] in (5.5, 6.0, 4.25) and meta["tags"]["lang"] == "en"
        assert "latent" not in meta and "frames" not in meta and "media" not in meta


def test_shards_are_byte_reproducible(tmp_path):
    table, _ = _table(np.random.default_rng(1))
    first = _write(tmp_path / "a", table)
    second = _write(tmp_path / "b", table)
    digest = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (*first, *second)]
    assert digest[0] == digest[1]


def test_manifest_holds_scalars_and_points_at_the_shard(tmp_path):
    import pyarrow.parquet as pq

    table, _ = _table(np.random.default_rng(2))
    _write(tmp_path, table)
    manifest = pq.read_table(tmp_path / "_work/manifest/shard-000000.parquet")
    assert {"key", "source", "caption", "caption_vlm", "aesthetic", "shard"} <= set(manifest.column_names)
    assert not {"latent", "t5", "frames", "media"} & set(manifest.column_names)
    stats = json.loads((tmp_path / "shards/shard-000000.stats.json").read_text())
    assert stats["keys"] == ["s0", "s1", "s2"]


def _plan_problems(tmp_path, stages) -> str:
    config = parse_config({"input": str(tmp_path), "output": str(tmp_path / "out"), "plugins": ["tests.member_stages"],
                           "stages": stages})
    with pytest.raises(ConfigError) as info:
        build_plan(config)
    return str(info.value)


def test_member_for_a_column_the_stage_does_not_write_fails_at_plan_time(tmp_path):
    message = _plan_problems(tmp_path, [{"stage": "ingest"}, {"stage": "stray_member"}])
    assert "'stray_member'" in message and "'latent'" in message and "does not write" in message
    assert "fix:" in message


def test_two_columns_written_as_one_member_fail_at_plan_time(tmp_path):
    message = _plan_problems(tmp_path, [{"stage": "ingest"}, {"stage": "twin_members"}])
    assert "'emb_a', 'emb_b'" in message and "'emb.npy'" in message and "fix:" in message
