"""Cluster 1M MinHash signatures with planted duplicate groups, end to end on Ray.

    .venv/bin/python benchmarks/bench_dedup_scale.py --quick        # 100k rows
    .venv/bin/python benchmarks/bench_dedup_scale.py                # 1M rows
    .venv/bin/python benchmarks/bench_dedup_scale.py --address 127.0.0.2:6379   # on a running cluster

Rows are synthetic captions of 12 words from a 50,000-word vocabulary. A fraction of
them (`--dup-fraction`) form planted groups of 2-5 rows: one base caption and copies
whose last word is replaced (word-bigram Jaccard 10/12 = 0.83 with each other).

Two timed parts. First the rows are generated and written as Parquet files, as the runner
writes the segment in front of a global stage (`--segment` keeps them for the next run).
Then the real stage runs on that segment (`MinHashDedup.run` with the runner's executor:
signatures, LSH buckets, verification, connected components, keep policy, and the lazy
annotation of each file, consumed here). The stage's time is reported apart from the
generation, with its phases (the output is consumed on the workers, as the runner's sink
does). Also reported: peak memory of the driver (RSS and USS); on an embedded Ray, the
proportional set size (sampled every 2 s) and the CPU seconds summed over every Ray process; with `--address`,
the tasks of this job per node (Ray's state API); and accuracy against the planted groups.
"""

from __future__ import annotations

import argparse
import collections
import json
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
    """Peak RSS and USS of this process (the driver), and the CPU seconds used while it ran, summed over
    it and its descendants (an embedded Ray's raylet, GCS and workers; not a cluster joined by address;
    a process counts until its last sample), every 0.5 s; the peak PSS summed over the same processes
    every 2 s: reading every process's memory map costs ~0.1 CPU-s a round (12 processes), which every
    0.5 s took ~10% of 2 CPUs from the stage it measures."""

    PSS_EVERY = 4  # ticks of 0.5 s

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_total = self.peak_rss = self.peak_uss = 0
        self._cpu_first: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._halt = threading.Event()

    @property
    def cpu_s(self) -> float:
        return sum(last - self._cpu_first[pid] for pid, last in self._cpu_last.items())

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        tick = 0
        while True:
            with_pss = tick % self.PSS_EVERY == 0
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    cpu = proc.cpu_times()
                    info = proc.memory_full_info() if with_pss or proc.pid == me.pid else None
                except (psutil.Error, OSError):
                    continue
                if info is not None:
                    total += info.pss
                # A process that starts later counts from 0: all of its CPU time is this run's.
                self._cpu_first.setdefault(proc.pid, cpu.user + cpu.system if tick == 0 else 0.0)
                self._cpu_last[proc.pid] = cpu.user + cpu.system
                if proc.pid == me.pid:
                    self.peak_rss = max(self.peak_rss, info.rss)
                    self.peak_uss = max(self.peak_uss, info.uss)
            if with_pss:
                self.peak_total = max(self.peak_total, total)
            tick += 1
            if self._halt.wait(0.5):
                return

    def stop(self) -> None:
        self._halt.set()
        self.join()


def outcome(batch):
    """One row per block of the stage's output: its rows, planted copies flagged, singles flagged, and the
    planted groups it keeps a row of. Counted on the workers, as the runner's sink consumes the rows."""
    import pyarrow as pa

    dup = np.array(batch.column("_reject").to_pylist(), dtype=object) == "duplicate"
    group = batch.column("group").to_numpy()
    planted = group >= 0
    return pa.table({"rows": [len(dup)], "planted": [int((dup & planted).sum())],
                     "single": [int((dup & ~planted).sum())],
                     "kept_groups": pa.array([np.unique(group[planted & ~dup]).tolist()], pa.list_(pa.int64()))})


def write_segment(folder: Path, n: int, n_dup: int, blocks: int) -> float:
    """Generate the rows into `folder` as Parquet files (one per block), unless a previous run left the
    same rows there; returns the seconds spent."""
    import ray

    wanted = {"rows": n, "dup_rows": n_dup, "blocks": blocks}
    marker = folder / "_bench_rows.json"
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return 0.0
    t0 = time.perf_counter()
    for old in folder.glob("*.parquet"):
        old.unlink()
    ray.data.range(n, override_num_blocks=blocks).map_batches(
        make_rows, fn_kwargs={"n_dup": n_dup}, batch_format="numpy", batch_size=None).write_parquet(str(folder))
    marker.write_text(json.dumps(wanted))
    return time.perf_counter() - t0


def tasks_per_node(address: str, job_id: str) -> dict[str, int]:
    """Finished tasks of this job per node id (Ray's state API, from the dashboard of the cluster at `address`)."""
    from ray.util.state import list_tasks

    tasks = list_tasks(address=address, filters=[("job_id", "=", job_id)], limit=10_000,
                       raise_on_missing_output=False)
    return dict(collections.Counter(t.node_id for t in tasks if t.state == "FINISHED" and t.node_id))


def measure(segment, n: int, n_dup: int, *, partitions: int, embedded: bool, run: int) -> None:
    """Run the stage once on the segment, consume its output on the workers; print its time, memory and
    accuracy against the planted groups."""
    import pyarrow as pa
    import ray

    from dataprep.ray_executor import RayExecutor
    from dataprep.stages.dedup.stage import MinHashDedup

    stage = MinHashDedup(MinHashDedup.Params(mode="text", threshold=0.7, num_partitions=partitions))
    sampler = MemorySampler()
    sampler.start()
    t0 = time.perf_counter()
    executor = RayExecutor()
    out = stage.run(executor.read(segment), executor)   # what the runner hands a global stage
    t_run = time.perf_counter()
    counts = pa.concat_tables(ray.get(out.map_batches(outcome, batch_format="pyarrow", batch_size=None)
                                      .to_arrow_refs()))
    t_end = time.perf_counter()
    stage_s = t_end - t0
    sampler.stop()
    rows, flagged_planted, flagged_single = (sum(counts.column(c).to_pylist()) for c in ("rows", "planted", "single"))
    kept_groups = {g for groups in counts.column("kept_groups").to_pylist() for g in groups}
    n_groups = len(np.unique(make_rows({"id": np.arange(n_dup)}, n_dup=n_dup)["group"])) if n_dup else 0
    expected = n_dup - n_groups
    seconds = {**stage.stats.get("seconds", {}), "annotate_consume": round(t_end - t_run, 1)}
    print(f"run={run} stage_s={stage_s:.1f} rows_per_s={rows / stage_s:,.0f} stage_seconds={seconds}"
          + (f" cpu_s_all_ray_processes={sampler.cpu_s:.1f}" if embedded else ""))
    print(f"run={run} peak_driver_rss_mib={sampler.peak_rss / 2**20:,.0f} "
          f"peak_driver_uss_mib={sampler.peak_uss / 2**20:,.0f}"
          + (f" peak_pss_all_ray_processes_mib={sampler.peak_total / 2**20:,.0f}" if embedded else ""))
    print(f"run={run} verified_edges={stage.stats.get('verified_edges')} cc_rounds={stage.stats.get('cc_rounds')} "
          f"recall={flagged_planted / max(expected, 1):.4f} ({flagged_planted:,}/{expected:,} planted copies "
          f"flagged) false_flags={flagged_single:,} of {n - n_dup:,} singletons; rows={rows:,}; every group keeps "
          f"one: {len(kept_groups) == n_groups}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100,000 rows")
    ap.add_argument("--dup-fraction", type=float, default=0.2, help="share of rows in planted groups")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the embedded Ray")
    ap.add_argument("--blocks", type=int, default=0, help="segment files (0: rows / 25,000)")
    ap.add_argument("--segment", type=Path, default=None,
                    help="folder of the generated rows, kept for the next run (default: a temporary one)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of the stage on the same rows (the first pays "
                                                           "for starting Ray's worker processes)")
    ap.add_argument("--address", default=None, help="a running Ray cluster to join (GCS address) instead of "
                                                    "an embedded one; tasks per node are then reported")
    args = ap.parse_args()
    n = 100_000 if args.quick else args.rows
    n_dup = int(n * args.dup_fraction)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("ray").setLevel(logging.WARNING)

    import tempfile

    import ray

    from dataprep.executor import Segment
    from dataprep.ray_executor import embedded_ray_env

    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        # As the runner starts embedded Ray: workers inherit the driver's environment (a runtime_env would
        # make every worker wait for the runtime-env agent instead of taking a prestarted one).
        os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                    os.environ.get("PYTHONPATH", "")])
        for name, value in embedded_ray_env(args.cpus).items():
            os.environ.setdefault(name, value)
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    blocks = args.blocks or max(2, n // 25_000)
    with tempfile.TemporaryDirectory(prefix="dedup-bench-") as scratch:
        folder = args.segment or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        generate_s = write_segment(folder, n, n_dup, blocks)
        files = sorted(folder.glob("*.parquet"))
        segment = Segment(str(folder), tuple(map(str, files)), sum(p.stat().st_size for p in files))
        print(f"rows={n:,} cluster_cpus={int(ray.cluster_resources().get('CPU', 0))} nodes={len(ray.nodes())} "
              f"segment_files={len(segment.files)} partitions={args.partitions}")
        print(f"generate_s={generate_s:.1f} (0: reused --segment)")
        for run in range(1, args.repeat + 1):
            measure(segment, n, n_dup, partitions=args.partitions, embedded=not args.address, run=run)
    if args.address:
        job_id = ray.get_runtime_context().get_job_id()
        time.sleep(5)  # task events reach the state API a few seconds after the tasks end
        print(f"job_id={job_id} tasks_per_node={tasks_per_node(args.address, job_id)}")
    ray.shutdown()


if __name__ == "__main__":
    main()
