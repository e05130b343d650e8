"""Throughput of the standardize stage against the plain ffmpeg CLI doing the same work.

    .venv/bin/python benchmarks/bench_standardize.py --quick

Generates test videos (testsrc2 and mandelbrot, 1280x720, 30 fps), then standardizes each whole video
to one 640x360, 24 fps, H.264 clip three ways, measuring output frames per second:
  ffmpeg    the ffmpeg CLI, one process per video, 2 at a time with 1 thread each
  stage x2  Standardize.process_batch in 2 worker processes with 1 thread each
  stage x1  Standardize.process_batch in 1 worker process with 1 thread
  ffmpeg x1 the ffmpeg CLI, one at a time: what scaling plain ffmpeg gets on this machine
Videos are handed out one at a time to whichever worker is free, for both. Each stage worker
cuts one 0.5 s clip before the clock starts, as a Ray worker has its first-call costs (pandas,
imported by pyarrow's first `pa.array`) behind it after its first batch. Each worker
(and each ffmpeg CLI process) is pinned to its own core, as a scheduler that gives a
task one CPU means it: ffmpeg >= 7 runs demuxing, decoding, filtering and encoding in
separate threads, so an unpinned "-threads 1" ffmpeg still spreads over ~1.3 cores and
1 vs 2 workers would compare 1.3 cores with 2 (`--no-pin` shows that case). The last
line is `ratio_vs_ffmpeg=X scaling_2_workers=Y`: X = stage x2 / ffmpeg frames per
second, Y = stage x2 / stage x1 (targets: X >= 0.95, Y >= 1.8 on 2 idle cores). Each
figure is the best of `--rounds`; CPU seconds per frame are printed too, because they
do not depend on what else the machine is running, and wall-clock figures do.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataprep.ffmpeg import ffmpeg_exe  # noqa: E402

WIDTH, HEIGHT, FPS, CRF, PRESET = 640, 360, 24, 20, "fast"
PIN = True


def make_inputs(folder: Path, count: int, seconds: float) -> list[Path]:
    """`count` distinct 1280x720 30 fps videos of `seconds` each."""
    paths = []
    for i in range(count):
        path = folder / f"in{i}.mp4"
        source = f"testsrc2=s=1280x720:r=30:d={seconds}" if i % 2 == 0 else f"mandelbrot=s=1280x720:r=30:end_scale={0.1 + i}"
        graph = ["-f", "lavfi", "-i", source] + (["-t", str(seconds)] if i % 2 else [])
        subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *graph, "-c:v", "libx264",
                        "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", str(path)], check=True)
        paths.append(path)
    return paths


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (ffmpeg), user + system."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def ffmpeg_cli(path: Path, seconds: float, out: Path, cpus: queue.Queue) -> int:
    """What a user would run by hand for one clip, on a free core; returns the frames written."""
    frames = int(seconds * FPS + 1e-6)
    vf = f"fps={FPS},scale={WIDTH}:{HEIGHT}:flags=bicubic,format=yuv420p"
    cpu = cpus.get()
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if PIN else None
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-threads", "1", "-i", str(path),
                    "-filter_threads", "1", "-vf", vf, "-frames:v", str(frames), "-an", "-c:v", "libx264", "-preset",
                    PRESET, "-crf", str(CRF), "-threads", "1", "-movflags", "+faststart", str(out)], check=True,
                   preexec_fn=pin)
    cpus.put(cpu)
    return frames


def input_row(path: Path) -> dict:
    """The row probe would make for a generated input."""
    import av

    from dataprep.stages.pyav import length_seconds, video_stream

    with av.open(str(path)) as container:
        stream = video_stream(container)
        return {"key": path.stem, "source": str(path), "media_type": "video", "width": 1280, "height": 720,
                "fps": 30.0, "duration": length_seconds(container, stream), "has_audio": False,
                "video_stream": stream.index}


def stage_worker(rows: list[dict]) -> tuple[int, float]:
    """Standardize `rows` in this process with one ffmpeg thread; returns frames written and CPU seconds."""
    import pyarrow as pa

    from dataprep.stages.video.standardize import Standardize, StandardizeParams

    cpu = _cpu_seconds()
    params = StandardizeParams(min_seconds=0, max_seconds=None, fps=FPS, width=WIDTH, height=HEIGHT, crf=CRF,
                               preset=PRESET, threads=1)
    stage = Standardize(params)
    stage.setup()
    total = 0
    for row in rows:  # one row per batch, as a streaming executor would hand them over
        out = stage.process_batch(pa.Table.from_pylist([row]))
        assert out.column("_reject").null_count == out.num_rows, out.column("_reject").to_pylist()
        total += sum(out.column("frame_count").to_pylist())
    return total, _cpu_seconds() - cpu


def _warm(cpus: Any, pin: bool, row: dict) -> None:
    """Pin this worker to one free core and bring it where a Ray worker is before its first batch.

    A Ray worker has imported Ray Data, and pandas with it; here pyarrow imports pandas on the first
    `pa.array` of the first batch (0.2-0.3 s of CPU). Standardizing one short `row` pays every such
    first-call cost before the clock starts: on the clock, two workers would pay it twice (once on
    each core) where one worker pays it once, which no long job does.
    """
    if pin:
        os.sched_setaffinity(0, {cpus.get()})
    stage_worker([row])


def run_stage(rows: list[dict], workers: int, warm_row: dict) -> tuple[int, float, float]:
    context = multiprocessing.get_context("spawn")
    cpus = context.Manager().Queue()
    for cpu in range(workers):
        cpus.put(cpu)
    with context.Pool(workers, initializer=_warm, initargs=(cpus, PIN, warm_row)) as pool:
        pool.map(time.sleep, [0.5] * workers, chunksize=1)  # every worker started and warm, outside the timing
        start = time.perf_counter()
        done = pool.map(stage_worker, [[row] for row in rows], chunksize=1)
        wall = time.perf_counter() - start
    return sum(f for f, _ in done), wall, sum(c for _, c in done)


def run_cli(rows: list[dict], workers: int, folder: Path) -> tuple[int, float, float]:
    free: queue.Queue = queue.Queue()
    for core in range(workers):
        free.put(core)
    cpu = _cpu_seconds()
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        frames = sum(pool.map(lambda r: ffmpeg_cli(Path(r["source"]), r["duration"], folder / f"cli-{r['key']}.mp4",
                                                   free), rows))
    return frames, time.perf_counter() - start, _cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 videos of 4 s, one round (under a minute)")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--rounds", type=int, default=2, help="each measurement is the best of this many")
    parser.add_argument("--no-pin", action="store_true", help="let workers and ffmpeg float over all cores")
    args = parser.parse_args()
    global PIN
    PIN = not args.no_pin
    count, seconds, rounds = (4, 4.0, 2) if args.quick else (args.videos, args.seconds, args.rounds)
    print(f"load_average={os.getloadavg()[0]:.2f} cpus={os.cpu_count()} pinned={PIN} videos={count} "
          f"seconds={seconds} 1280x720@30 -> {WIDTH}x{HEIGHT}@{FPS} libx264 preset={PRESET} crf={CRF}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-standardize-") as tmp:
        folder = Path(tmp)
        rows = [input_row(p) for p in make_inputs(folder, count, seconds)]
        (folder / "warm").mkdir()
        warm_row = input_row(make_inputs(folder / "warm", 1, 0.5)[0])  # each stage worker cuts it before the clock
        best: dict[str, float] = {}
        cpu_per_frame: dict[str, float] = {}
        for _ in range(rounds):
            for name, run in (("ffmpeg x2", lambda: run_cli(rows, 2, folder)),
                              ("stage x2", lambda: run_stage(rows, 2, warm_row)),
                              ("stage x1", lambda: run_stage(rows, 1, warm_row)),
                              ("ffmpeg x1", lambda: run_cli(rows, 1, folder))):
                frames, wall, cpu = run()
                rate = frames / wall
                print(f"{name:10s} frames={frames} wall={wall:.2f}s fps={rate:.1f} cpu_ms_per_frame="
                      f"{1000 * cpu / frames:.2f}", flush=True)
                best[name] = max(best.get(name, 0.0), rate)
                cpu_per_frame[name] = min(cpu_per_frame.get(name, float("inf")), cpu / frames)
    print(f"load_average={os.getloadavg()[0]:.2f} cpu_ratio_vs_ffmpeg="
          f"{cpu_per_frame['ffmpeg x2'] / cpu_per_frame['stage x2']:.2f} (ffmpeg CPU per frame / stage CPU per frame)")
    print(f"machine ceiling: ffmpeg x2 / ffmpeg x1 = {best['ffmpeg x2'] / best['ffmpeg x1']:.2f} "
          "(the scaling plain ffmpeg itself gets here)")
    ratio = best["stage x2"] / best["ffmpeg x2"]
    scaling = best["stage x2"] / best["stage x1"]
    print(f"ratio_vs_ffmpeg={ratio:.2f} scaling_2_workers={scaling:.2f}")


if __name__ == "__main__":
    main()
