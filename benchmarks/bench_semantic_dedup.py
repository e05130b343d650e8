"""Semantic dedup of 1M embeddings of dimension 512 with planted near-duplicates, end to end on Ray.

    .venv/bin/python benchmarks/bench_semantic_dedup.py --quick        # 100k rows
    .venv/bin/python benchmarks/bench_semantic_dedup.py                # 1M rows
    .venv/bin/python benchmarks/bench_semantic_dedup.py --quick --margin 0    # recall without
                                                                            # second-cluster assignment

Rows are synthetic CLIP-like unit vectors (float32, 512 values): a shared direction (CLIP
embeddings of unrelated images have a cosine of ~0.3-0.5, not 0), one of 2,000 topics drawn
with a skew (a few topics are large, as in web data), and per-row noise: two rows of one topic
have a cosine of ~0.7, of different topics ~0.35. A fraction (`--dup-fraction`) of the rows
form planted groups of 2-5: one base row and copies at Gaussian noise 0.10-0.20 of it
(cosine ~0.98-0.995 to the base, >= ~0.96 between copies: re-encodes and resizes). The real
stage runs on them (`SemanticDedup.run`: scan, k-means, assignment, tiled pairs, connected
components, keep policy, annotation of each block) on an embedded Ray instance. Reported:
generation time, the stage's wall time (run and reading the result back), peak memory
(proportional set size summed over the driver and its Ray processes, sampled every 0.5 s, and
the driver's own peak RSS), the stage's counters and seconds per phase, and accuracy against
the planted groups.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIM = 512
TOPICS = 2000
# Weights of the shared direction, the topic and the row's own noise (see the docstring).
SHARED, TOPIC, NOISE = 1.0, 1.0, 0.9


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _background(rng: np.random.Generator, n: int, shared: np.ndarray, topics: np.ndarray) -> np.ndarray:
    """(n, DIM) rows: the shared direction + a skewed topic + noise (topic t has weight ~1/sqrt(t))."""
    z = (TOPICS * rng.random(n) ** 2).astype(np.int64)
    return _unit(SHARED * shared + TOPIC * topics[z] + NOISE * rng.standard_normal((n, DIM)) / np.sqrt(DIM))


def make_rows(batch: dict, *, n_dup: int):
    """Rows for ids in `batch["id"]`: ids < n_dup are in planted groups (sizes cycle 2, 3, 4, 5)."""
    import pyarrow as pa

    ids = batch["id"].astype(np.int64)
    fixed = np.random.default_rng(7)
    shared, topics = _unit(fixed.standard_normal(DIM)), _unit(fixed.standard_normal((TOPICS, DIM)))
    sizes = np.tile([2, 3, 4, 5], n_dup // 14 + 1)
    starts = np.r_[0, np.cumsum(sizes)]
    planted = ids < n_dup
    group = np.where(planted, np.searchsorted(starts, ids, side="right") - 1, -1)
    member = np.where(planted, ids - starts[group.clip(0)], 0)
    rng = np.random.default_rng([1, int(ids[0])])
    vec = _background(rng, len(ids), shared, topics)
    for g in np.unique(group[planted]):                       # a group's base depends on the group only
        rows = np.flatnonzero(group == g)
        base = _background(np.random.default_rng([2, int(g)]), 1, shared, topics)[0]
        eps = rng.uniform(0.10, 0.20, len(rows))[:, None]
        copies = _unit(base + eps * rng.standard_normal((len(rows), DIM)) / np.sqrt(DIM))
        vec[rows] = np.where((member[rows] == 0)[:, None], base, copies)
    return pa.table({"key": [f"r{i:09d}" for i in ids.tolist()],
                     "clip_embedding": pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), DIM),
                     "width": np.full(len(ids), 640), "height": np.full(len(ids), 360), "group": group})


class MemorySampler(threading.Thread):
    """Peak PSS summed over this process and every Ray process it started, and this process's peak RSS."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_total = 0
        self.peak_driver = 0
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._halt.is_set():
            total = 0
            # This process and its descendants: the embedded Ray instance (raylet, GCS,
            # workers) only, not other Ray clusters on the machine. PSS, not RSS: the object
            # store's shared pages would count once per worker that maps them.
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_full_info().pss
                except (psutil.Error, OSError):
                    continue
            self.peak_total = max(self.peak_total, total)
            self.peak_driver = max(self.peak_driver, me.memory_info().rss)
            self._halt.wait(0.5)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100,000 rows")
    ap.add_argument("--dup-fraction", type=float, default=0.2, help="share of rows in planted groups")
    ap.add_argument("--margin", type=float, default=None,
                    help="boundary_margin (default: the stage's); 0: no second-cluster assignment")
    ap.add_argument("--clusters", type=int, default=None, help="n_clusters (default: the stage's auto)")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--blocks", type=int, default=0, help="input blocks (0: rows / 25,000)")
    args = ap.parse_args()
    n = 100_000 if args.quick else args.rows
    n_dup = int(n * args.dup_fraction)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")

    import ray

    from dataprep.ray_executor import RayExecutor
    from dataprep.stages.dedup.semantic import SemanticDedup

    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    blocks = args.blocks or max(args.cpus, n // 25_000)
    sampler = MemorySampler()
    sampler.start()
    t_gen = time.perf_counter()
    ds = ray.data.range(n, override_num_blocks=blocks).map_batches(
        make_rows, fn_kwargs={"n_dup": n_dup}, batch_format="numpy", batch_size=25_000).materialize()
    gen = time.perf_counter() - t_gen
    options = {"n_clusters": args.clusters} | ({} if args.margin is None else {"boundary_margin": args.margin})
    stage = SemanticDedup(SemanticDedup.Params(**options))
    t0 = time.perf_counter()
    out = stage.run(ds, RayExecutor())
    flagged_planted = flagged_single = wrong_group = rows = 0
    kept_groups: set[int] = set()
    group_of: dict[str, int] = {}
    dup_pairs: list[tuple[int, str]] = []
    for batch in out.select_columns(["key", "group", "_reject", "_duplicate_of"]).iter_batches(
            batch_size=100_000, batch_format="numpy"):
        dup = np.array([r is not None and r.startswith("semantic_dup:near_duplicate") for r in batch["_reject"]])
        planted = batch["group"] >= 0
        rows += len(dup)
        flagged_planted += int((dup & planted).sum())
        flagged_single += int((dup & ~planted).sum())
        kept_groups.update(batch["group"][planted & ~dup].tolist())
        group_of.update(zip(batch["key"][planted].tolist(), batch["group"][planted].tolist(), strict=True))
        dup_pairs += list(zip(batch["group"][dup].tolist(), batch["_duplicate_of"][dup].tolist(), strict=True))
    wall = time.perf_counter() - t0
    sampler.stop()
    wrong_group = sum(group_of.get(k, -2) != g for g, k in dup_pairs)
    sizes = np.tile([2, 3, 4, 5], n_dup // 14 + 1)
    n_groups = int(np.searchsorted(np.cumsum(sizes), n_dup, side="left")) + 1 if n_dup else 0
    expected = n_dup - n_groups
    recall = flagged_planted / max(expected, 1)
    print(f"rows={rows:,} dim={DIM} planted_groups={n_groups:,} planted_duplicates={expected:,} cpus={args.cpus} "
          f"input_blocks={blocks} boundary_margin={stage.params.boundary_margin} generate_s={gen:.1f}")
    for k, v in stage.stats.items():
        print(f"{k}={v}")
    print(f"recall={recall:.4f} ({flagged_planted:,}/{expected:,} planted copies flagged) "
          f"false_flags={flagged_single:,} of {n - n_dup:,} singletons; merged_across_groups={wrong_group:,}; "
          f"every group keeps one: {len(kept_groups) == n_groups}")
    print(f"peak_pss_all_ray_processes_gb={sampler.peak_total / 2**30:.2f} "
          f"peak_rss_driver_gb={sampler.peak_driver / 2**30:.2f}")
    print(f"rows={rows} wall_s={wall:.1f} peak_pss_gb={sampler.peak_total / 2**30:.2f} "
          f"driver_rss_gb={sampler.peak_driver / 2**30:.2f} recall={recall:.4f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
