"""Driver memory and wall time of a cheap job at 1M and 10M rows: does the driver grow with the input?

    python benchmarks/bench_driver_scale.py [--rows 1000000,10000000] [--work /tmp/bench_scale]

For each size it writes a Parquet manifest of fake media references (distinct URIs that
need not exist: `bench_media` below gives every row 32 bytes of media), then runs
`ingest -> bench_media -> bench_keep (a metadata filter) -> sink` with large shards:
  fresh   the whole manifest into an empty output;
  resume  a copy of that output (hard links) with every other shard and ledger part removed,
          about half the rows, as a kill leaves them uncommitted; then the whole manifest into it;
  noop    the whole manifest again into the fresh run's output.
Each run is a `dataprep run` process; the driver's peak RSS and the peak USS of every
process of its session (Ray's included) are sampled. The largest inline task argument is
one listing page (pages are cut by ingest's `batch_rows`; committed keys travel as object
refs, one hash bucket per task), measured by pickling the largest page.
With `--synthetic`, the fresh run is replaced by writing its committed state directly (shard stats,
manifest parts and ledger parts as the sink and the filter leave them, no tars), and only the no-op
reruns are measured: the first one also builds the final files. It shows the driver's cost at 10M
rows in minutes instead of the hours a fresh 10M run takes on two cores.
Last line: `driver_10m_over_1m=X noop_10m_s=Y` (the first and last sizes given).
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


def run_measured(config: Path) -> dict[str, float]:
    """Wall seconds, driver peak RSS (MB) and session peak (MB) of one `dataprep run`."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "dataprep.cli", "run", str(config), "-q"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    peaks = {"driver": 0, "all": 0}

    def sample() -> None:
        driver = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                peaks["driver"] = max(peaks["driver"], driver.memory_info().rss)
                peaks["all"] = max(peaks["all"], _session_rss(proc.pid))
            except psutil.Error:
                pass
            time.sleep(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    _, err = proc.communicate()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"dataprep run failed ({proc.returncode}): {err.decode()[-2000:]}")
    return {"wall_s": time.monotonic() - start, "driver_mb": peaks["driver"] / 1e6, "all_mb": peaks["all"] / 1e6}


def listing_rate(manifest: Path) -> tuple[float, float]:
    """(rows per second of ingest's paging and row making in one process, MB of the largest pickled page)."""
    from dataprep.stages.ingest import Ingest

    ingest = Ingest()
    start, rows, largest = time.monotonic(), 0, 0
    for page in ingest.pages(str(manifest)):
        largest = max(largest, len(pickle.dumps(page)))
        rows += ingest.rows(page).num_rows
    return rows / (time.monotonic() - start), largest / 1e6


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

    from dataprep import ledger, paths, storage
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
    for name in ("finalize", "noop"):
        measured = run_measured(config)
        result.update({f"{name}_{k}": v for k, v in measured.items()})
        print(f"rows={rows} synthetic {name}: {measured['wall_s']:.1f} s, driver peak {measured['driver_mb']:.0f} MB, "
              f"all processes {measured['all_mb']:.0f} MB", flush=True)
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
    for name, output in (("fresh", fresh), ("resume", resumed), ("noop", fresh)):
        if name == "resume":
            uncommit_half(fresh, resumed)
        config = work / f"{name}-{rows}.yaml"
        write_config(config, full, output)
        measured = run_measured(config)
        for k, v in measured.items():
            result[f"{name}_{k}"] = v
        print(f"rows={rows} {name}: {measured['wall_s']:.1f} s ({measured['wall_s'] / rows * 1e6:.1f} s per 1M rows), "
              f"driver peak {measured['driver_mb']:.0f} MB, all processes {measured['all_mb']:.0f} MB", flush=True)
    print(f"rows={rows} listing {result['list_rows_s']:.0f} rows/s in one process; largest page "
          f"(largest inline task argument) {result['page_mb']:.2f} MB", flush=True)
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
    peak, peak_large = (max(v for k, v in r.items() if k.endswith("driver_mb")) for r in (small, large))
    print(f"driver_10m_over_1m={peak_large / peak:.2f} noop_10m_s={large['noop_wall_s']:.1f}")


if __name__ == "__main__":
    main()
