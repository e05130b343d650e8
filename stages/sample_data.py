"""`dataprep sample-data DIR`: a reproducible set of videos, images and captions, made offline with ffmpeg.

The set has what a real crawl has: sizes, frame rates, durations and aspect ratios
(portrait too, natively and by rotation metadata), hard scene cuts, near-duplicates
(re-encoded and resized copies with repeated captions), and two corrupt files.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from dataprep.ffmpeg import ffmpeg_exe

_BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1"]


@dataclass(frozen=True)
class VideoSpec:
    """One generated video: its scenes (lavfi source expressions) and how it is encoded."""

    name: str
    size: tuple[int, int]
    fps: int
    scenes: tuple[tuple[str, float], ...]  # (source expression without size/rate, seconds)
    caption: str
    rotation: int = 0


@dataclass(frozen=True)
class ImageSpec:
    """One generated image: a frame of a lavfi source."""

    name: str
    size: tuple[int, int]
    source: str
    caption: str


def _moving_box(colour: str, box: str, speed: int) -> str:
    return f"color=c={colour}[bg{speed}];color=c={box}:s=48x48[fg{speed}];[bg{speed}][fg{speed}]overlay=x='mod(t*{speed},W)':y='H/2+H/4*sin(t*2)'"


# A smooth moving colour field; deterministic, unlike ffmpeg's `gradients` source.
GRADIENT = (
    "nullsrc=s={{s}}:r={{r}},geq=r='128+120*sin(2*PI*(X/W+T/4+{phase}/7))'"
    ":g='128+120*sin(2*PI*(Y/H+T/5))':b='128+100*cos(2*PI*(X+Y)/(W+H)+{phase})'"
)


def _source(expr: str, w: int, h: int, rate: int | None) -> str:
    """A lavfi source expression at a size (and rate): fills `{s}`/`{r}` or appends `s=`/`r=`."""
    if "{s}" in expr:
        return expr.replace("{s}", f"{w}x{h}").replace("{r}", str(rate or 25))
    sep = ":" if "=" in expr else "="
    return f"{expr}{sep}s={w}x{h}" + (f":r={rate}" if rate else "")


VIDEOS: tuple[VideoSpec, ...] = (
    VideoSpec("testsrc_landscape", (640, 360), 30, (("testsrc2", 4.0),), "a colourful test pattern with a moving counter"),
    VideoSpec("mandelbrot_zoom", (480, 270), 25, (("mandelbrot", 5.0),), "a zoom into the mandelbrot fractal"),
    VideoSpec("life_square", (256, 256), 15, (("life=seed=7:ratio=0.3:mold=10", 6.0),), "a game of life simulation growing mould"),
    VideoSpec("smpte_short", (320, 240), 24, (("smptebars", 1.5),), "smpte colour bars on a test card"),
    VideoSpec("portrait_testsrc", (360, 640), 30, (("testsrc2", 3.0),), "a vertical test pattern filmed in portrait"),
    VideoSpec("portrait_cellauto", (288, 512), 24, (("cellauto=rule=110:seed=3", 4.0),), "a cellular automaton pattern in portrait"),
    VideoSpec("cuts_three_scenes", (480, 270), 25,
              (("testsrc2", 2.0), ("mandelbrot", 2.0), ("smptebars", 2.0)),
              "three scenes: a test pattern, a fractal and colour bars"),
    VideoSpec("cuts_colour_blocks", (320, 180), 30,
              (("color=c=red", 1.5), ("color=c=green", 1.5), ("color=c=blue", 1.5), ("color=c=yellow", 1.5)),
              "four solid colour scenes, red, green, blue and yellow"),
    VideoSpec("cuts_portrait", (270, 480), 30,
              (("testsrc2", 2.0), ("life=seed=11:ratio=0.2", 2.0)),
              "a portrait clip that cuts from a test pattern to a simulation"),
    VideoSpec("cuts_long", (426, 240), 24,
              ((GRADIENT.format(phase=0), 3.0), ("zoneplate=ku=512:kv=100:kt2=10", 3.0),
               ("rgbtestsrc", 2.0), ("mandelbrot=start_scale=1", 2.0)),
              "a longer video with four different scenes"),
    VideoSpec("box_navy", (320, 240), 30, ((_moving_box("navy", "yellow", 90), 3.0),), "a yellow square bouncing across a navy background"),
    VideoSpec("box_green", (400, 300), 25, ((_moving_box("darkgreen", "white", 60), 4.0),), "a white square moving over a dark green field"),
    VideoSpec("gradients_wide", (640, 272), 24, ((GRADIENT.format(phase=2), 5.0),), "slowly shifting colour gradients in cinemascope"),
    VideoSpec("zoneplate_hd", (512, 288), 30, (("zoneplate=ku=256:kv=256:kt2=20", 2.5),), "a moving zone plate interference pattern"),
    VideoSpec("testsrc_12fps", (320, 240), 12, (("testsrc", 3.0),), "an old style test pattern at a low frame rate"),
    VideoSpec("testsrc_60fps", (320, 180), 60, (("testsrc2", 2.0),), "a smooth test pattern at sixty frames per second"),
    VideoSpec("tiny_clip", (96, 64), 10, (("testsrc2", 2.0),), "a tiny low resolution test clip"),
    VideoSpec("too_short", (320, 240), 25, (("smptebars", 0.4),), "a fraction of a second of colour bars"),
    VideoSpec("ultrawide_strip", (960, 160), 25, (("testsrc2", 2.0),), "an ultra wide banner strip"),
    VideoSpec("life_long", (200, 200), 10, (("life=seed=42:ratio=0.4", 8.0),), "a long game of life run"),
    VideoSpec("phone_rotated", (480, 270), 30, (("testsrc2", 3.0),), "a phone video recorded sideways", rotation=90),
    VideoSpec("cellauto_land", (384, 216), 20, (("cellauto=rule=30:seed=9", 3.0),), "rule thirty automaton scrolling"),
)

IMAGES: tuple[ImageSpec, ...] = tuple(
    ImageSpec(name, size, source, caption)
    for name, size, source, caption in (
        ("img_testsrc", (640, 480), "testsrc2", "a test pattern still"),
        ("img_mandelbrot", (800, 600), "mandelbrot", "the mandelbrot set in colour"),
        ("img_smpte", (640, 360), "smptebars", "colour bars for calibration"),
        ("img_portrait", (480, 720), "testsrc2", "a portrait test card"),
        ("img_square_life", (512, 512), "life=seed=3:ratio=0.5:mold=5", "a cellular pattern on black"),
        ("img_gradient_a", (640, 400), GRADIENT.format(phase=1), "a smooth two tone gradient"),
        ("img_gradient_b", (400, 640), GRADIENT.format(phase=3), "a vertical colour gradient"),
        ("img_zoneplate", (512, 512), "zoneplate=ku=200:kv=200", "circular interference rings"),
        ("img_rgb", (320, 240), "rgbtestsrc", "red green and blue stripes"),
        ("img_cellauto", (600, 300), "cellauto=rule=90:seed=4", "a sierpinski like automaton"),
        ("img_red", (300, 300), "color=c=firebrick", "a plain red square"),
        ("img_wide", (1024, 256), "testsrc2", "a wide panorama test pattern"),
        ("img_small", (48, 48), "testsrc2", "a thumbnail too small to use"),
        ("img_large", (1600, 900), "mandelbrot=start_scale=2", "a large fractal wallpaper"),
        ("img_life_b", (256, 384), "life=seed=21:ratio=0.2", "sparse cells of a simulation"),
        ("img_teal", (640, 480), "color=c=teal", "a flat teal background"),
        ("img_smpte_hd", (1280, 720), "smptehdbars", "high definition colour bars"),
        ("img_yuv", (352, 288), "yuvtestsrc", "a yuv test pattern"),
        ("img_zone_b", (300, 500), "zoneplate=ku=80:kv=300", "stretched zone plate rings"),
        ("img_gradient_c", (720, 480), GRADIENT.format(phase=5), "a warm gradient sky"),
        ("img_testsrc_b", (360, 360), "testsrc", "a classic test card"),
    )
)


def _run(args: list[str]) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True, stdin=subprocess.DEVNULL)


def _video_args(spec: VideoSpec, out: Path, variant: int) -> list[str]:
    w, h = spec.size
    parts, labels = [], []
    for i, (expr, seconds) in enumerate(spec.scenes):
        base = expr.split("[", 1)[0]
        if "overlay" in expr:
            chain = expr.replace("color=c=", f"color=s={w}x{h}:r={spec.fps}:d={seconds}:c=", 1)
            parts.append(f"{chain},trim=duration={seconds}[s{i}]")
        else:
            parts.append(f"{_source(base, w, h, spec.fps)},trim=duration={seconds},setpts=PTS-STARTPTS[s{i}]")
        labels.append(f"[s{i}]")
    hue = f",hue=h={variant * 47}" if variant else ""
    graph = ";".join(parts) + f";{''.join(labels)}concat=n={len(labels)}:v=1:a=0,format=yuv420p{hue}[v]"
    args = ["-filter_complex", graph, "-map", "[v]", "-c:v", "libx264", "-preset", "veryfast", "-crf", "26",
            "-r", str(spec.fps), "-threads", "1", *_BITEXACT]
    return [*args, str(out)]


def _make_video(spec: VideoSpec, folder: Path, variant: int) -> Path:
    out = folder / f"{spec.name}{_suffix(variant)}.mp4"
    if spec.rotation:
        plain = folder / f".{out.stem}-unrotated.mp4"
        _run(_video_args(spec, plain, variant))
        _run(["-display_rotation", str(spec.rotation), "-i", str(plain), "-c", "copy", *_BITEXACT, str(out)])
        plain.unlink()
    else:
        _run(_video_args(spec, out, variant))
    return out


def _make_image(spec: ImageSpec, folder: Path, variant: int, ext: str) -> Path:
    w, h = spec.size
    out = folder / f"{spec.name}{_suffix(variant)}.{ext}"
    hue = f",hue=h={variant * 47}" if variant else ""
    _run(["-f", "lavfi", "-i", _source(spec.source, w, h, None), "-frames:v", "1", "-vf", f"format=rgb24{hue}",
          "-q:v", "3", *_BITEXACT, str(out)])
    return out


def _suffix(variant: int) -> str:
    return f"_v{variant:02d}" if variant else ""


def _write_caption(path: Path, caption: str) -> None:
    path.with_suffix(".txt").write_text(caption + "\n")


def generate(folder: str | Path, *, repeat: int = 1, workers: int | None = None) -> dict[str, int]:
    """Write the sample set (`repeat` colour-shifted variants of it) into `folder`; returns counts."""
    ffmpeg_exe()  # a missing or unusable ffmpeg fails here, before anything is written
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 2
    jobs = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for variant in range(repeat):
            for spec in VIDEOS:
                jobs.append((pool.submit(_make_video, spec, folder, variant), spec.caption))
            for i, ispec in enumerate(IMAGES):
                ext = "png" if i % 4 == 3 else "jpg"
                jobs.append((pool.submit(_make_image, ispec, folder, variant, ext), ispec.caption))
        made = [(job.result(), caption) for job, caption in jobs]
    manifest = []
    for path, caption in made:
        _write_caption(path, caption)
        manifest.append({"uri": path.name, "caption": caption})
    manifest += _near_duplicates(folder)
    manifest += _corrupt_files(folder)
    with open(folder / "manifest.jsonl", "w") as f:
        for row in manifest:
            f.write(json.dumps(row) + "\n")
    videos = sum(1 for r in manifest if r["uri"].endswith(".mp4"))
    return {"videos": videos, "images": len(manifest) - videos, "files": len(manifest)}


def _near_duplicates(folder: Path) -> list[dict[str, str]]:
    """Re-encoded and resized copies of a few items, with the original's caption."""
    rows = []
    pairs = (
        ("testsrc_landscape.mp4", "dup_testsrc_reencoded.mp4", ["-c:v", "libx264", "-crf", "35", "-preset", "veryfast"]),
        ("mandelbrot_zoom.mp4", "dup_mandelbrot_resized.mp4",
         ["-vf", "scale=320:180", "-c:v", "libx264", "-crf", "28", "-preset", "veryfast"]),
        ("img_mandelbrot.jpg", "dup_img_mandelbrot_small.jpg", ["-vf", "scale=400:300", "-q:v", "6"]),
        ("img_testsrc.jpg", "dup_img_testsrc_reencoded.jpg", ["-q:v", "12"]),
    )
    for original, copy, args in pairs:
        _run(["-i", str(folder / original), *args, "-threads", "1", *_BITEXACT, str(folder / copy)])
        caption = (folder / original).with_suffix(".txt").read_text().strip()
        _write_caption(folder / copy, caption)
        rows.append({"uri": copy, "caption": caption})
    return rows


def _corrupt_files(folder: Path) -> list[dict[str, str]]:
    """A truncated mp4 (its moov atom cut off) and random bytes with a JPEG header."""
    whole = (folder / "life_long.mp4").read_bytes()
    (folder / "broken_truncated.mp4").write_bytes(whole[: len(whole) // 3])
    rng = random.Random(1234)
    (folder / "broken_garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(rng.getrandbits(8) for _ in range(4096)))
    rows = []
    for name, caption in (("broken_truncated.mp4", "a video cut off mid-download"),
                          ("broken_garbage.jpg", "an image that is not an image")):
        _write_caption(folder / name, caption)
        rows.append({"uri": name, "caption": caption})
    return rows


def add_command(sub: argparse._SubParsersAction) -> None:
    """Add `dataprep sample-data DIR [--repeat N]` to the CLI's subcommands."""
    p = sub.add_parser("sample-data", help="write a reproducible offline sample set")
    p.add_argument("dir")
    p.add_argument("--repeat", type=int, default=1, help="colour-shifted copies of the whole set (for scale tests)")
    p.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    from dataprep.cli import emit

    counts = generate(args.dir, repeat=args.repeat)
    emit(f"wrote {counts['videos']} videos and {counts['images']} images with captions to {args.dir}")
    return 0
