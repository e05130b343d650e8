"""`MinHashDedup.run` on Ray Data: same decisions as the in-process path, the column contract."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pyarrow as pa
import pytest

from dataprep.columns import DUPLICATE_OF, REJECT
from dataprep.stages.dedup.stage import MinHashDedup
from dataprep.ray_executor import RayExecutor
from tests.stages.dedup.local import dedup_in_process
from tests.stages.dedup.variants import image_variants, load_image, thumb_jpeg


def _collect(ray, ds) -> pa.Table:
    return pa.concat_tables(ray.get(ds.to_arrow_refs()))


@pytest.fixture(scope="module")
def mixed_table(shared_data) -> pa.Table:
    """2,000 real captions (a quarter repeated with edits) plus 4 images with 3 copies each."""
    path = shared_data / "text" / "coco_captions_val2017.annotations.jsonl"
    with path.open(encoding="utf-8") as f:
        caps = [json.loads(line)["caption"] for line in itertools.islice(f, 1500)]
    caps += [c.upper() + "!" for c in caps[:500]]
    frames: list = [None] * len(caps)
    for p in sorted((shared_data / "images").glob("skimage_*"))[:4]:
        img = load_image(p)
        caps.append(None)
        frames.append([thumb_jpeg(img)])
        for name, var in list(image_variants(img).items())[:3]:
            caps.append(f"copy {name}")
            frames.append([thumb_jpeg(var)])
    n = len(caps)
    rng = np.random.default_rng(0)
    return pa.table({"key": [f"r{i:05d}" for i in range(n)], "caption": caps,
                     "frames": pa.array(frames, pa.list_(pa.binary())),
                     "aesthetic": rng.random(n), "extra": np.arange(n)})


def test_run_on_ray_matches_in_process(ray_session, mixed_table):
    ray = ray_session
    stage = MinHashDedup(MinHashDedup.Params(mode="both", keep="score", score_column="aesthetic",
                                             num_partitions=3))
    ds = ray.data.from_arrow(mixed_table).repartition(4)
    out = _collect(ray, stage.run(ds, RayExecutor()))
    ref = dedup_in_process(stage, mixed_table, n_parts=2)

    assert out.num_rows == mixed_table.num_rows
    assert set(out.column_names) == set(mixed_table.column_names) | {REJECT, DUPLICATE_OF, "dup_cluster"}
    got = {k: (r, d) for k, r, d in zip(out.column("key").to_pylist(), out.column(REJECT).to_pylist(),
                                        out.column(DUPLICATE_OF).to_pylist(), strict=True)}
    want = {k: (r, d) for k, r, d in zip(ref.column("key").to_pylist(), ref.column(REJECT).to_pylist(),
                                         ref.column(DUPLICATE_OF).to_pylist(), strict=True)}
    assert got == want
    n_dup = sum(r == "duplicate" for r, _ in got.values())
    assert n_dup >= 500 + 12  # the 500 edited captions and the 12 image copies
    # The kept row of a cluster has the highest score (keep=score).
    score = dict(zip(mixed_table.column("key").to_pylist(), mixed_table.column("aesthetic").to_pylist(),
                     strict=True))
    assert all(score[d] >= score[k] for k, (_, d) in got.items() if d is not None)
    # Image copies (no shared caption with their original) were merged by the visual signal.
    key_of_cap = dict(zip(mixed_table.column("key").to_pylist(), mixed_table.column("caption").to_pylist(),
                          strict=True))
    assert sum(1 for k, (r, _) in got.items() if r and (key_of_cap[k] or "").startswith("copy ")) >= 9


def test_run_with_no_duplicates_keeps_everything(ray_session):
    ray = ray_session
    t = pa.table({"key": ["a", "b", "c"], "caption": ["one two three", "four five six", None],
                  "width": [1, 2, 3], "height": [1, 1, 1]})
    out = _collect(ray, MinHashDedup(MinHashDedup.Params(mode="text", num_partitions=2)).run(ray.data.from_arrow(t), RayExecutor()))
    assert out.num_rows == 3
    assert out.column(REJECT).null_count == 3 and out.column(DUPLICATE_OF).null_count == 3


def test_missing_columns_fail_before_any_work(ray_session):
    ray = ray_session
    t = pa.table({"key": ["a"], "caption": ["x y"], "width": [1], "height": [1]})
    with pytest.raises(ValueError, match=r"reads \['frames'\].*fix: add the stage"):
        MinHashDedup(MinHashDedup.Params(mode="both")).run(ray.data.from_arrow(t), RayExecutor())


def test_single_partition_and_empty_input(ray_session):
    ray = ray_session
    t = pa.table({"key": ["a", "b", "c"], "caption": ["one two three", "One two, three!", None],
                  "width": [1, 2, 3], "height": [1, 1, 1]})
    stage = MinHashDedup(MinHashDedup.Params(mode="text", num_partitions=1))
    out = _collect(ray, stage.run(ray.data.from_arrow(t), RayExecutor())).sort_by("key")
    assert out.column(REJECT).to_pylist() == ["duplicate", None, None]
    assert out.column(DUPLICATE_OF).to_pylist() == ["b", None, None]    # b: larger resolution
    assert stage.run(ray.data.from_arrow(t.slice(0, 0)), RayExecutor()).count() == 0
