"""Driver memory and wall time of a cheap job at 1M and 10M rows: does the driver grow with the input?

    python benchmarks/bench_driver_scale.py [--rows 1000000,10000000] [--work /tmp/bench_scale] [--synthetic]

For each size it writes a Parquet manifest of fake media references (distinct URIs that
need not exist: `bench_media` below gives every row 32 bytes of media), then runs
`ingest -> bench_media -> bench_keep (a metadata filter) -> sink` with large shards:
  fresh       the whole manifest into an empty output;
  resume      a copy of that output (hard links) with every other shard and ledger part removed,
              about half the rows, as a kill leaves them uncommitted; then the whole manifest into it;
  noop        the whole manifest again into the fresh run's output: the first rerun after a run that
              did work lists every row and anti-joins it against every commit record;
  noop_again  once more: nothing changed since a run that found nothing to do (`dataprep.noop`), so
              the input is not listed.
Each run is a `dataprep run` process; the driver's peak RSS, the peak USS of every process of
its session (Ray's included) and their CPU seconds (user + system, summed over the processes
seen; a process's last half second is missed) are sampled. The largest inline task argument
of the listing is measured by pickling: a row-group read of the manifest (a Parquet manifest
is read by the workers), else the largest listing page.
With `--synthetic`, the fresh and resume runs are replaced by writing a fresh run's committed state
directly (shard stats, manifest parts and ledger parts as the sink and the filter leave them, no
tars), and only reruns are measured: `first` (also builds the final files), then `noop` with the
no-op record of `first` removed (as after a run that did work), then `noop_again`. It shows the
driver's cost at 10M rows in minutes instead of the hours a fresh 10M run takes on two cores.
A line per phase compares the driver's peak at the last size to the first, phase with phase; the last
line is `driver_10m_over_1m=X noop_10m_s=Y`: X the largest of those ratios, Y the last size's `noop`
(the one that lists).
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from dataprep import paths
from dataprep.stage import Filter, Stage

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the job config names this module as `benchmarks.bench_driver_scale`
    sys.path.insert(0, str(REPO))


class BenchMedia(Stage):
    """Gives every row 32 bytes of media, so the sink writes a sample without reading a file."""

    name = "bench_media"
    reads = ("key",)
    writes = ("media", "media_ext")
    batch_size = 1000

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """The batch with `media` and `media_ext` set."""
        n = batch.num_rows
        return batch.append_column("media", pa.array([b"x" * 32] * n, pa.binary())).append_column(
            "media_ext", pa.array(["bin"] * n, pa.string()))


class BenchKeep(Filter):
    """Drops one row in ten by its caption: a metadata filter that reads no media."""

    name = "bench_keep"
    reads = ("caption",)
    writes = ("caption_digit",)
    scores: ClassVar[tuple[str, ...]] = ("caption_digit",)
    batch_size = 1000

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """The batch with the caption's last digit as a score."""
        digits = [int(c[-1]) for c in batch.column("caption").to_pylist()]
        return batch.append_column("caption_digit", pa.array(digits, pa.int64()))

    def reasons(self, batch: pa.Table) -> list[str | None]:
        """`bench:drop` for captions ending in 9."""
        return [f"bench:drop: digit {d} == 9" if d == 9 else None for d in batch.column("caption_digit").to_pylist()]


def write_manifest(path: Path, rows: int) -> None:
    """A manifest of `rows` distinct fake image URIs with captions, written in slices."""
    schema = pa.schema([("uri", pa.string()), ("caption", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, 500_000):
            ids = range(start, min(rows, start + 500_000))
            writer.write_table(pa.table({"uri": [f"/fake/media/{i // 1000:05d}/{i:09d}.jpg" for i in ids],
                                         "caption": [f"caption {i}" for i in ids]}, schema=schema))


def write_config(path: Path, manifest: Path, output: Path) -> None:
    """The benchmark's job config."""
    path.write_text(f"""input: {manifest}
output: {output}
plugins: [benchmarks.bench_driver_scale]
stages:
  - stage: ingest
  - stage: bench_media
  - stage: bench_keep
sink:
  max_samples: 100000
  max_bytes: 1000000000
""")


def _session_rss(sid: int) -> int:
    total = 0
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                total += p.memory_full_info().uss
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return total


def _session_cpu(sid: int, seen: dict[int, float]) -> None:
    """Record the CPU seconds so far of every process of session `sid` in `seen` (pid -> seconds)."""
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                times = p.cpu_times()
                seen[p.pid] = max(seen.get(p.pid, 0.0), times.user + times.system)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue


def run_measured(config: Path) -> dict[str, float]:
    """Wall seconds, driver peak RSS (MB), session peak (MB) and session CPU seconds of one `dataprep run`."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "dataprep.cli", "run", str(config), "-q"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    peaks = {"driver": 0, "all": 0}
    cpu: dict[int, float] = {}

    def sample() -> None:
        driver = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                peaks["driver"] = max(peaks["driver"], driver.memory_info().rss)
                peaks["all"] = max(peaks["all"], _session_rss(proc.pid))
                _session_cpu(proc.pid, cpu)
            except psutil.Error:
                pass
            time.sleep(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    _, err = proc.communicate()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"dataprep run failed ({proc.returncode}): {err.decode()[-2000:]}")
    return {"wall_s": time.monotonic() - start, "driver_mb": peaks["driver"] / 1e6, "all_mb": peaks["all"] / 1e6,
            "cpu_s": sum(cpu.values())}


def _line(rows: int, name: str, measured: dict[str, float]) -> str:
    return (f"rows={rows} {name}: {measured['wall_s']:.1f} s ({measured['wall_s'] / rows * 1e6:.1f} s per 1M rows), "
            f"driver peak {measured['driver_mb']:.0f} MB, all processes {measured['all_mb']:.0f} MB, "
            f"{measured['cpu_s']:.0f} CPU-s")


def listing_rate(manifest: Path) -> tuple[float, float]:
    """(rows per second of ingest's paging and row making in one process, MB of the largest pickled listing
    argument: a row-group read when the runner hands the workers those, else a page)."""
    from dataprep.listing import READ_ROWS
    from dataprep.stages.ingest import Ingest

    ingest = Ingest()
    start, rows, largest = time.monotonic(), 0, 0
    for page in ingest.pages(str(manifest)):
        largest = max(largest, len(pickle.dumps(page)))
        rows += ingest.rows(page).num_rows
    rate = rows / (time.monotonic() - start)
    reads = ingest.page_reads(str(manifest), READ_ROWS)
    return rate, (largest if reads is None else max(len(pickle.dumps(r)) for r in reads)) / 1e6


def uncommit_half(fresh: Path, target: Path) -> None:
    """`target`: a hard-linked copy of `fresh` without every other shard and ledger part (their rows are to do)."""
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(["cp", "-al", str(fresh), str(target)], check=True)
    for i, stats in enumerate(sorted((target / "shards").glob("*.stats.json"))):
        if i % 2:
            stats.with_name(stats.name.replace(".stats.json", ".tar")).unlink()
            (target / "_work" / "manifest" / stats.name.replace(".stats.json", ".parquet")).unlink()
            stats.unlink()
    for i, part in enumerate(sorted((target / "_work" / "rejects").glob("*.parquet"))):
        if i % 2:
            part.unlink()


def synthesize_committed(config: Path, manifest: Path, output: Path) -> None:
    """`output` as a finished fresh run leaves it (without tars): a shard per 100k listed rows, a ledger part
    per 100 rows `bench_keep` dropped."""
    import json

    import pyarrow.compute as pc

    from dataprep import ledger, storage
    from dataprep.config import load_config
    from dataprep.job_record import check_output
    from dataprep.plan import build_plan
    from dataprep.stages.ingest import Ingest

    shutil.rmtree(output, ignore_errors=True)
    check_output(build_plan(load_config(config)))
    ingest = Ingest(batch_rows=100_000)
    for shard, page in enumerate(ingest.pages(str(manifest))):
        listed = ingest.rows(page)
        digit = pc.cast(pc.utf8_slice_codeunits(listed.column("caption"), -1), pa.int64())
        keep = pc.not_equal(digit, 9)
        relative = paths.shard_path("", shard)
        kept = listed.filter(keep).select(["key", "source", "caption", "media_type"])
        kept = kept.append_column("caption_digit", digit.filter(keep)).append_column(
            "shard", pa.array([relative] * kept.num_rows))
        storage.write_atomic(str(output / paths.manifest_part(shard)), storage.parquet_bytes(kept))
        stats = {"shard": relative, "count": kept.num_rows, "bytes": 0, "payload_bytes": 0,
                 "keys": kept.column("key").to_pylist(), "token": None, "fields": {}}
        storage.write_atomic(str(output / paths.stats_path(relative)), json.dumps(stats).encode())
        dropped = listed.filter(pc.invert(keep))
        for start in range(0, dropped.num_rows, 100):
            part = dropped.slice(start, 100)
            n = part.num_rows
            ledger.write_part(str(output), pa.table({
                "key": part.column("key"), "source": part.column("source"), "parent_key": pa.nulls(n, pa.string()),
                "stage": ["bench_keep"] * n, "stage_index": pa.array([2] * n, pa.int32()),
                "reason": ["bench:drop: digit 9 == 9"] * n, "duplicate_of": pa.nulls(n, pa.string()),
                "scores": ['{"caption_digit": 9}'] * n}, schema=ledger.SCHEMA))


def bench_synthetic(rows: int, work: Path) -> dict[str, float]:
    """The no-op reruns of one size over a synthesized committed output."""
    work.mkdir(parents=True, exist_ok=True)
    full, output = work / f"manifest-{rows}.parquet", work / f"out-{rows}-synthetic"
    if not full.exists():
        write_manifest(full, rows)
    config = work / f"synthetic-{rows}.yaml"
    write_config(config, full, output)
    synthesize_committed(config, full, output)
    result: dict[str, float] = {}
    for name in ("first", "noop", "noop_again"):
        if name == "noop":  # as after a run that did work: no record that nothing is left to do
            (output / paths.NOOP_STATE).unlink(missing_ok=True)
        measured = run_measured(config)
        result.update({f"{name}_{k}": v for k, v in measured.items()})
        print(_line(rows, f"synthetic {name}", measured), flush=True)
    _, result["page_mb"] = listing_rate(full)
    print(f"rows={rows} largest inline listing task argument {result['page_mb'] * 1e3:.2f} kB", flush=True)
    return result


def bench(rows: int, work: Path) -> dict[str, float]:
    """Every measure of one size."""
    work.mkdir(parents=True, exist_ok=True)
    full = work / f"manifest-{rows}.parquet"
    if not full.exists():
        write_manifest(full, rows)
    result: dict[str, float] = {}
    result["list_rows_s"], result["page_mb"] = listing_rate(full)
    fresh, resumed = work / f"out-{rows}-fresh", work / f"out-{rows}-resume"
    shutil.rmtree(fresh, ignore_errors=True)
    for name, output in (("fresh", fresh), ("resume", resumed), ("noop", fresh), ("noop_again", fresh)):
        if name == "resume":
            uncommit_half(fresh, resumed)
        config = work / f"{name}-{rows}.yaml"
        write_config(config, full, output)
        measured = run_measured(config)
        for k, v in measured.items():
            result[f"{name}_{k}"] = v
        print(_line(rows, name, measured), flush=True)
    print(f"rows={rows} listing {result['list_rows_s']:.0f} rows/s in one process; largest inline listing task "
          f"argument {result['page_mb'] * 1e3:.2f} kB", flush=True)
    return result


def main() -> None:
    """Run every size and print the ratio of driver peaks and the last size's no-op time."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="1000000,10000000", help="comma-separated sizes; first and last compared")
    parser.add_argument("--work", default="/tmp/bench_driver_scale", help="folder for manifests and outputs")
    parser.add_argument("--synthetic", action="store_true", help="write the committed state instead of the fresh "
                                                                      "and resume runs; measure the no-op reruns")
    args = parser.parse_args()
    sizes = [int(float(s)) for s in args.rows.split(",")]
    run = bench_synthetic if args.synthetic else bench
    results = {n: run(n, Path(args.work)) for n in sizes}
    small, large = results[sizes[0]], results[sizes[-1]]
    ratios = {}
    for name in (k.removesuffix("_driver_mb") for k in small if k.endswith("_driver_mb")):
        ratios[name] = large[f"{name}_driver_mb"] / small[f"{name}_driver_mb"]
        print(f"phase={name} driver {small[f'{name}_driver_mb']:.0f} -> {large[f'{name}_driver_mb']:.0f} MB "
              f"(x{ratios[name]:.2f}), wall {small[f'{name}_wall_s']:.1f} -> {large[f'{name}_wall_s']:.1f} s, "
              f"CPU {small[f'{name}_cpu_s']:.0f} -> {large[f'{name}_cpu_s']:.0f} s")
    print(f"driver_10m_over_1m={max(ratios.values()):.2f} noop_10m_s={large['noop_wall_s']:.1f}")


if __name__ == "__main__":
    main()
