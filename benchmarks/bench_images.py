"""Image standardization throughput, single core: the `image_standardize` stage against a bare Pillow loop.

    .venv/bin/python benchmarks/bench_images.py --quick

Both sides do the same work on the same files, read from disk each pass: decode, apply the EXIF
orientation, convert to RGB, cover-resize and centre-crop to the size (Lanczos), encode JPEG q90.
The stage runs as the runner calls it (`process_batch` on an Arrow batch of rows, results put
back into Arrow); the bare loop is the least code that does the work. Images are the real photos
of ../shared/data/images, or generated ones when that folder is absent. Each side's best pass counts.

The last line is `ratio_vs_bare=X`: the stage's images/s over the bare loop's (target >= 0.9).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import io  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from dataprep.stages.image.standardize import ImageStandardize  # noqa: E402

SHARED_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"
SIZE = (512, 512)


def bare(paths: list[str]) -> list[bytes]:
    """The same work as the stage, in a plain loop."""
    out = []
    for path in paths:
        with Image.open(path) as image:
            rgb = ImageOps.exif_transpose(image).convert("RGB")
        sized = ImageOps.fit(rgb, SIZE, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        sized.save(buffer, "JPEG", quality=90, optimize=False)
        out.append(buffer.getvalue())
    return out


def staged(paths: list[str]) -> list[bytes]:
    """The stage on one Arrow batch of rows, as the runner calls it."""
    stage = ImageStandardize(width=SIZE[0], height=SIZE[1], max_upscale=None, format="jpeg", quality=90)
    rows = pa.table({"key": [f"k{i}" for i in range(len(paths))], "source": paths, "media_type": ["image"] * len(paths)})
    return stage.process_batch(rows).column("media").to_pylist()


def best_rate(fn: Callable[[list[str]], list[bytes]], paths: list[str], repeats: int) -> float:
    """Images/s of the fastest of `repeats` passes."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(paths)
        best = min(best, time.perf_counter() - start)
    return len(paths) / best


def images(folder: Path, scratch: Path, count: int) -> list[str]:
    """The real photos, or `count` generated 1600x1200 ones when they are absent."""
    if folder.is_dir():
        return sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = scratch / f"gen{i}.jpg"
        noise = rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)
        Image.fromarray(noise).resize((1600, 1200), Image.Resampling.BICUBIC).save(path, quality=90)
        paths.append(str(path))
    return paths


def main() -> None:
    """Time both sides and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 passes instead of 5")
    parser.add_argument("--folder", type=Path, default=SHARED_IMAGES)
    args = parser.parse_args()
    repeats = 2 if args.quick else 5
    with tempfile.TemporaryDirectory() as scratch:
        paths = images(args.folder, Path(scratch), 40)
        pixels = sum(Image.open(p).width * Image.open(p).height for p in paths) / len(paths) / 1e6
        print(f"{len(paths)} images, mean {pixels:.2f} MP, to {SIZE[0]}x{SIZE[1]} JPEG q90, {repeats} passes each")
        assert [len(b) for b in bare(paths[:3])] == [len(b) for b in staged(paths[:3])], "the two sides differ"
        rates = {}
        for name, fn in (("bare_pillow", bare), ("image_standardize", staged), ("bare_pillow_again", bare)):
            rates[name] = best_rate(fn, paths, repeats)
            print(f"{name:20s} {rates[name]:8.1f} images/s")
    baseline = max(rates["bare_pillow"], rates["bare_pillow_again"])
    print(f"ratio_vs_bare={rates['image_standardize'] / baseline:.3f}")


if __name__ == "__main__":
    main()
