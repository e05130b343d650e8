"""Peak memory of a whole job at 1x and 10x the sample set: does it grow with the input?

    python benchmarks/bench_memory.py [--config configs/quickstart.yaml] [--scale 10]

Runs `dataprep run` in a fresh process per size and samples the resident memory of
the driver and every Ray process it starts (USS, so shared pages count once).
Last line: `peak_1x_mb=A peak_Nx_mb=B ratio=B/A rows_1x=R rows_Nx=S`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def _session_uss(root: int) -> int:
    total = 0
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == root:
                total += p.memory_full_info().uss
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return total


def run_measured(config: str, input_dir: str, output_dir: str) -> tuple[float, int, float]:
    """(peak MB across the job's processes, rows processed, wall seconds)."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "dataprep.cli", "run", config, "--input", input_dir,
                             "--output", output_dir, "-q"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True, cwd=REPO)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _session_uss(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"run failed: {out}")
    rows = int(out.split("(")[1].split(" new rows")[0])
    return peak / 1e6, rows, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=str(REPO / "configs" / "quickstart.yaml"))
    parser.add_argument("--scale", type=int, default=10)
    args = parser.parse_args()
    from dataprep.stages.sample_data import generate

    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for scale in (1, args.scale):
            data = os.path.join(tmp, f"data{scale}")
            generate(data, repeat=scale)
            peak, rows, wall = run_measured(args.config, data, os.path.join(tmp, f"out{scale}"))
            results[scale] = (peak, rows)
            print(f"scale {scale}x: {rows} rows, peak {peak:.0f} MB, wall {wall:.1f} s", flush=True)
    (p1, r1), (pn, rn) = results[1], results[args.scale]
    print(f"peak_1x_mb={p1:.0f} peak_{args.scale}x_mb={pn:.0f} ratio={pn / p1:.2f} rows_1x={r1} rows_{args.scale}x={rn}")


if __name__ == "__main__":
    main()
