"""Cluster 1M MinHash signatures with planted duplicate groups, end to end on Ray.

    .venv/bin/python benchmarks/bench_dedup_scale.py --quick        # 100k rows
    .venv/bin/python benchmarks/bench_dedup_scale.py                # 1M rows

Rows are synthetic captions of 12 words from a 50,000-word vocabulary. A fraction of
them (`--dup-fraction`) form planted groups of 2-5 rows: one base caption and copies
whose last word is replaced (word-bigram Jaccard 10/12 = 0.83 with each other). The real
stage runs on them (`MinHashDedup.run`: signatures, LSH buckets, verification, connected
components, keep policy, annotation of each block) on an embedded Ray instance. Reported: wall time,
peak memory (proportional set size summed over the driver and its Ray processes, sampled
every 0.5 s, and the driver's own peak), how bucket records, edges and cluster rows split
over the hash partitions, which worker processes ran the candidate tasks, seconds per
phase, and accuracy against the planted groups.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VOCAB = 50_000
WORDS = 12


def make_rows(batch: dict, *, n_dup: int) -> dict:
    """Rows for ids in `batch["id"]`: ids < n_dup are in planted groups (sizes cycle 2, 3, 4, 5)."""
    ids = batch["id"].astype(np.int64)
    sizes = np.tile([2, 3, 4, 5], n_dup // 14 + 1)
    starts = np.r_[0, np.cumsum(sizes)]
    planted = ids < n_dup
    group = np.where(planted, np.searchsorted(starts, ids, side="right") - 1, -1)
    member = np.where(planted, ids - starts[group.clip(0)], 0)
    seed_of = np.where(planted, group, ids + 10_000_000)        # a group shares its base caption
    caps = []
    for s, m, i in zip(seed_of.tolist(), member.tolist(), ids.tolist(), strict=True):
        words = np.random.default_rng(s).integers(0, VOCAB, WORDS)
        if m > 0:
            words[-1] = VOCAB + np.random.default_rng(i).integers(0, 10 * VOCAB)
        caps.append(" ".join(f"w{w}" for w in words.tolist()))
    return {"key": np.array([f"r{i:09d}" for i in ids.tolist()]), "caption": np.array(caps, dtype=object),
            "width": np.full(len(ids), 640), "height": np.full(len(ids), 360),
            "group": group}


class MemorySampler(threading.Thread):
    """Peak PSS summed over this process and every Ray process, and this process's own peak."""

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
            # workers) only, not other Ray clusters on the machine.
            for proc in [me, *me.children(recursive=True)]:
                try:
                    pss = proc.memory_full_info().pss
                except (psutil.Error, OSError):
                    continue
                total += pss
                if proc.pid == me.pid:
                    self.peak_driver = max(self.peak_driver, pss)
            self.peak_total = max(self.peak_total, total)
            self._halt.wait(0.5)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100,000 rows")
    ap.add_argument("--dup-fraction", type=float, default=0.2, help="share of rows in planted groups")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--blocks", type=int, default=0, help="input blocks (0: rows / 25,000)")
    args = ap.parse_args()
    n = 100_000 if args.quick else args.rows
    n_dup = int(n * args.dup_fraction)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("ray").setLevel(logging.WARNING)

    import ray

    from dataprep.ray_executor import RayExecutor
    from dataprep.stages.dedup.stage import MinHashDedup

    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    blocks = args.blocks or max(args.cpus, n // 25_000)
    ds = ray.data.range(n, override_num_blocks=blocks).map_batches(
        make_rows, fn_kwargs={"n_dup": n_dup}, batch_format="numpy", batch_size=5000)
    stage = MinHashDedup(MinHashDedup.Params(mode="text", threshold=0.7, num_partitions=args.partitions))
    sampler = MemorySampler()
    sampler.start()
    t0 = time.perf_counter()
    out = stage.run(ds, RayExecutor())
    flagged_planted = flagged_single = rows = 0
    kept_groups: set[int] = set()
    for batch in out.select_columns(["group", "_reject"]).iter_batches(batch_size=100_000, batch_format="numpy"):
        dup = batch["_reject"] == "duplicate"
        planted = batch["group"] >= 0
        rows += len(dup)
        flagged_planted += int((dup & planted).sum())
        flagged_single += int((dup & ~planted).sum())
        kept_groups.update(batch["group"][planted & ~dup].tolist())
    wall = time.perf_counter() - t0
    sampler.stop()
    n_groups = len(np.unique(make_rows({"id": np.arange(n_dup)}, n_dup=n_dup)["group"])) if n_dup else 0
    expected = n_dup - n_groups
    pids = collections.Counter(stage.stats.get("candidate_task_pids", []))
    print(f"rows={rows:,} planted_groups={n_groups:,} planted_duplicates={expected:,} cpus={args.cpus} "
          f"input_blocks={blocks} partitions={args.partitions}")
    print(f"wall_s={wall:.1f} rows_per_s={rows / wall:,.0f}")
    print(f"peak_pss_all_ray_processes_mib={sampler.peak_total / 2**20:,.0f} "
          f"peak_pss_driver_mib={sampler.peak_driver / 2**20:,.0f}")
    for k, v in stage.stats.items():
        print(f"{k}={v}")
    print(f"candidate_tasks_per_worker_process={dict(sorted(pids.items()))}")
    print(f"recall={flagged_planted / max(expected, 1):.4f} ({flagged_planted:,}/{expected:,} planted copies "
          f"flagged) false_flags={flagged_single:,} of {n - n_dup:,} singletons; every group keeps one: "
          f"{len(kept_groups) == n_groups}")
    ray.shutdown()


if __name__ == "__main__":
    main()
