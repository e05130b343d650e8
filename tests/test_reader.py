"""The training reader: committed shards only, bucket folders, decoded tensors, batches that never mix buckets.

    .venv/bin/python -m pytest tests/test_reader.py -p no:cacheprovider            # with the t2v/t2i runs
    .venv/bin/python -m pytest tests/test_reader.py -m "not integration" -p no:cacheprovider
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from dataprep import paths
from dataprep.reader import batch_by_bucket, bucket_of, decode_sample, list_shards, read_batches

README = Path(__file__).resolve().parents[1] / "README.md"
# The README's training snippet as it stands under "Reading the shards in training:"; `test_readme_snippet_*`
# checks that README.md still holds it.
SNIPPET = '''\
from dataprep.reader import read_batches

# One bucket per batch; 48 frames = 2 s at 24 fps, the shortest clip t2v keeps, so every clip of a bucket stacks.
for batch in read_batches("out/t2v", batch_size=8, shuffle=1000, num_frames=48):
    media = batch["media"]  # uint8 (B, T, H, W, C), RGB; an image is one frame (T == 1)
    keys, captions, meta = batch["key"], batch["caption"], batch["meta"]  # lists of B; meta: KEY.json
'''


def _mp4(frames: int, width: int, height: int) -> bytes:
    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.full((height, width, 3), i * 10, dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def _shard(output: Path, relative: str, samples: list[dict], *, committed: bool = True) -> str:
    import webdataset as wds

    path = output / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as tar:
        for sample in samples:
            tar.write(sample)
    if committed:
        (output / paths.stats_path(relative)).write_text("{}")
    return str(path)


def _clip(key: str, frames: int, width: int, height: int) -> dict:
    meta = {"media_type": "video", "width": width, "height": height}
    return {"__key__": key, "mp4": _mp4(frames, width, height), "json": json.dumps(meta).encode(),
            "txt": f"clip {key}".encode(), "frames.0.jpg": b"thumbnail"}


def _image(key: str, width: int, height: int) -> dict:
    return {"__key__": key, "png": _png(width, height), "json": json.dumps({"media_type": "image"}).encode()}


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Path:
    """A job output by hand: two bucket folders, images outside them, one shard still being written."""
    out = tmp_path_factory.mktemp("out")
    _shard(out, "shards/64x32/shard-000000.tar", [_clip(f"w{i}", 6, 64, 32) for i in range(3)])
    _shard(out, "shards/32x64/shard-000001.tar", [_clip(f"t{i}", 6, 32, 64) for i in range(2)])
    _shard(out, "shards/shard-000002.tar", [_image("a", 40, 30), _image("c", 20, 20), _image("b", 40, 30)])
    _shard(out, "shards/64x32/shard-000003.tar", [_clip("late", 6, 64, 32)], committed=False)
    # Same shape as 64x32, another bucket: shape alone must not decide the batch.
    _shard(out, "shards/padded/shard-000004.tar", [_clip("x0", 6, 64, 32)])
    return out


def test_list_shards_groups_committed_shards_by_bucket_folder(output):
    shards = list_shards(str(output))
    assert {b: [Path(u).name for u in urls] for b, urls in shards.items()} == {
        "": ["shard-000002.tar"], "32x64": ["shard-000001.tar"], "64x32": ["shard-000000.tar"],
        "padded": ["shard-000004.tar"]}
    assert list_shards(str(output / "missing")) == {}
    assert bucket_of("s3://b/job/shards/640x360/shard-000001.tar") == "640x360"
    assert bucket_of("s3://b/job/shards/shard-000001.tar") == ""
    assert bucket_of("/data/shards/job/shards/640x360/f121/shard-000001.tar") == "640x360/f121"


def test_decode_sample_gives_uint8_frames_and_keeps_other_members(output):
    import webdataset as wds

    (url,) = list_shards(str(output))["64x32"]
    raw = next(iter(wds.WebDataset(url, shardshuffle=False)))
    sample = decode_sample(raw)
    assert sample["media"].dtype.is_floating_point is False and str(sample["media"].dtype) == "torch.uint8"
    assert tuple(sample["media"].shape) == (6, 32, 64, 3)  # (T, H, W, C)
    assert sample["bucket"] == "64x32" and sample["caption"] == "clip w0" and sample["meta"]["width"] == 64
    assert sample["members"] == {"frames.0.jpg": b"thumbnail"}
    assert tuple(decode_sample(raw, num_frames=4)["media"].shape) == (4, 32, 64, 3)
    (image_url,) = list_shards(str(output))[""]
    image = decode_sample(next(iter(wds.WebDataset(image_url, shardshuffle=False))))
    assert tuple(image["media"].shape) == (1, 30, 40, 3) and image["media"][0, 0, 0].tolist() == [200, 10, 10]


def test_batches_never_mix_buckets_or_shapes(output):
    batches = list(read_batches(str(output), batch_size=2))
    seen = [(b["bucket"], tuple(b["media"].shape)) for b in batches]
    assert sorted(seen) == [("", (1, 1, 20, 20, 3)), ("", (2, 1, 30, 40, 3)), ("32x64", (2, 6, 64, 32, 3)),
                            ("64x32", (1, 6, 32, 64, 3)), ("64x32", (2, 6, 32, 64, 3)),
                            ("padded", (1, 6, 32, 64, 3))]
    folder = {"w": "64x32", "t": "32x64", "x": "padded", "a": "", "b": "", "c": ""}
    for batch in batches:
        assert {folder[key[0]] for key in batch["key"]} == {batch["bucket"]}  # every sample from the batch's folder
    assert "late" not in {k for b in batches for k in b["key"]}  # uncommitted shard not read


def test_shuffle_reorders_but_reads_every_sample_once(output):
    def keys(**kw):
        return [k for b in read_batches(str(output), batch_size=1, **kw) for k in b["key"]]

    plain = keys()
    shuffled = [keys(shuffle=10, seed=s) for s in range(4)]
    assert all(sorted(s) == sorted(plain) for s in shuffled) and len(plain) == 9
    assert any(s != plain for s in shuffled)


def test_many_shapes_cannot_fill_memory():
    import torch

    samples = [{"bucket": "", "media": torch.zeros(1, n, 1, 3, dtype=torch.uint8), "key": str(n), "caption": None,
                "meta": {}, "members": {}} for n in range(1, 10)]
    consumed = []

    def source():
        for sample in samples:
            consumed.append(sample["key"])
            yield sample

    batches = batch_by_bucket(source(), batch_size=4, max_pending=3)
    first = next(batches)
    assert len(consumed) == 4 and len(first["key"]) == 1  # a group left early: 4 waiting > max_pending
    assert sum(len(b["key"]) for b in batches) == 8


def test_read_batches_without_shards_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="no committed shard.*fix"):
        read_batches(str(tmp_path), batch_size=2)


# --- on real t2v and t2i outputs of the sample set ---------------------------------------------------------------


@pytest.fixture(scope="module")
def job_outputs(config_output) -> dict[str, Path]:
    """The t2v and t2i configs' outputs on the sample set (tiny models), shared with tests/test_configs.py."""
    return {name: config_output(name) for name in ("t2v", "t2i")}


def _run_snippet(code: str, output: Path) -> dict:
    """Run a training snippet with its `out/...` path replaced by `output`; its variables after the loop."""
    code, count = re.subn(r'"out/[^"]*"', repr(str(output)), code)
    assert count == 1, f"the snippet should name one output folder (\"out/...\"), found {count}"
    namespace: dict = {}
    exec(compile(code, "README.md (Reading the shards in training)", "exec"), namespace)  # noqa: S102 - our README
    return namespace


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("job", ["t2v", "t2i"])
def test_snippet_reads_real_outputs_one_bucket_per_batch(job_outputs, job):
    out = job_outputs[job]
    namespace = _run_snippet(SNIPPET, out)
    assert str(namespace["media"].dtype) == "torch.uint8" and namespace["media"].ndim == 5

    shards = list_shards(str(out))
    total = 0
    for batch in read_batches(str(out), batch_size=4, shuffle=100, num_frames=48):
        media = batch["media"]  # (B, T, H, W, C)
        kinds = {m["media_type"] for m in batch["meta"]}
        assert kinds == ({"video"} if job == "t2v" else {"image"})
        # One bucket, its folder: t2v's folders are `640x360/f49` (the aspect bucket, then the latent frames).
        aspect = batch["bucket"].split("/")[0]
        assert {m.get("bucket") for m in batch["meta"]} == {aspect or None}
        if aspect:  # t2v clips, and t2i images standardized into aspect buckets (one frame each)
            width, height = map(int, aspect.split("x"))
            assert tuple(media.shape[1:]) == (48 if job == "t2v" else 1, height, width, 3)
        else:
            assert media.shape[1] == 1 and media.shape[-1] == 3
        total += len(batch["key"])
    committed = sum(json.loads(Path(paths.stats_path(u)).read_text())["count"] for urls in shards.values()
                    for u in urls)
    assert total == committed > 0
    if job == "t2v":  # clips only, each in its bucket folder: the stills went to the ledger
        assert "" not in shards and len(shards) >= 2


@pytest.mark.integration
@pytest.mark.slow
def test_every_input_is_in_a_shard_or_the_ledger_with_its_media_type_reason(job_outputs, sample_dir):
    import pyarrow.parquet as pq

    listed = {p.name for p in sample_dir.iterdir() if p.suffix not in (".txt", ".jsonl") and not p.name.startswith(".")}
    for job, unwanted in (("t2v", "image"), ("t2i", "video")):
        rejects = pq.read_table(job_outputs[job] / paths.REJECTS).to_pylist()
        manifest = pq.read_table(job_outputs[job] / paths.MANIFEST).to_pylist()
        by_type = [r for r in rejects if r["reason"].startswith(f"input:media_type: {unwanted}, ")]
        assert {Path(r["source"]).name for r in by_type} == {n for n in listed if _kind(n) == unwanted}
        assert {Path(r["source"]).name for r in rejects + manifest} == listed


def _kind(name: str) -> str:
    return "image" if Path(name).suffix.lower() in (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif") else "video"


@pytest.mark.integration
@pytest.mark.slow
def test_readme_snippet_is_the_tested_one_and_runs(job_outputs):
    """README.md's python block after "Reading the shards in training:" runs on t2v and t2i outputs."""
    section = README.read_text().split("Reading the shards in training:", 1)
    assert len(section) == 2, "README.md has no line 'Reading the shards in training:'"
    block = re.search(r"```python\n(.*?)```", section[1], re.S)
    assert block, "no ```python block after 'Reading the shards in training:' in README.md"
    assert block.group(1) == SNIPPET, "README's training snippet differs from tests/test_reader.py SNIPPET"
    for job in ("t2v", "t2i"):
        assert _run_snippet(block.group(1), job_outputs[job])["media"].dtype.itemsize == 1
