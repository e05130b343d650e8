"""Near-duplicate variants of real media, and the `frames` thumbnails the frame sampler would make."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np

THUMB_SIDE = 256   # pixels, longest side of a thumbnail, as the frame-sampling stage makes them
N_FRAMES = 8       # frames sampled evenly over a clip


def thumb_jpeg(img, *, quality: int = 85) -> bytes:
    """A PIL image as a JPEG thumbnail of at most THUMB_SIDE pixels on its longest side."""
    from PIL import Image

    img = img.convert("RGB")
    img.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def load_image(path: Path):
    """The image with its EXIF orientation applied, as RGB."""
    from PIL import Image, ImageOps

    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def _logo(img, frac: float = 0.12):
    """Paste a small opaque logo (a white box with a dark bar) in the bottom-right corner."""
    from PIL import ImageDraw

    img = img.copy()
    w, h = img.size
    s = max(4, int(min(w, h) * frac))
    d = ImageDraw.Draw(img)
    d.rectangle([w - s - 4, h - s // 2 - 4, w - 4, h - 4], fill=(250, 250, 250))
    d.rectangle([w - s, h - s // 3 - 4, w - 8, h - s // 6 - 4], fill=(20, 20, 160))
    return img


def image_variants(img) -> dict[str, object]:
    """Edited copies of one image: each must be found as a duplicate of the original."""
    from PIL import Image, ImageEnhance

    w, h = img.size
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=40)
    reencoded = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return {
        "reencode_q40": reencoded,
        "resize_50": img.resize((max(1, w // 2), max(1, h // 2)), Image.BICUBIC),
        "crop_10_center": img.crop((int(w * .05), int(h * .05), w - int(w * .05), h - int(h * .05))),
        "crop_10_corner": img.crop((int(w * .10), int(h * .10), w, h)),
        "bright_+10": ImageEnhance.Brightness(img).enhance(1.10),
        "bright_-10": ImageEnhance.Brightness(img).enhance(0.90),
        "logo": _logo(img),
    }


def sample_frames(path: Path, n: int = N_FRAMES) -> list[bytes]:
    """n frames evenly spaced over the clip, as JPEG thumbnails (PyAV; a decode error ends the clip)."""
    import av

    def frames():
        with av.open(str(path)) as container:
            try:
                yield from container.decode(container.streams.video[0])
            except av.error.FFmpegError:
                return

    total = sum(1 for _ in frames())
    if total == 0:
        return []
    wanted = set(np.linspace(0, total - 1, min(n, total)).round().astype(int).tolist())
    return [thumb_jpeg(f.to_image()) for i, f in enumerate(frames()) if i in wanted]


def video_variants(src: Path, out_dir: Path, duration: float) -> dict[str, Path]:
    """ffmpeg-edited copies of a clip: re-encode, resize, crop, trim, brightness, fps, logo."""
    from dataprep.ffmpeg import ffmpeg_exe

    trim = 0.10 * duration
    specs = {
        "reencode_crf35": ["-c:v", "libx264", "-crf", "35"],
        "resize_50": ["-vf", "scale=trunc(iw/4)*2:trunc(ih/4)*2"],
        "crop_10": ["-vf", "crop=iw*0.9:ih*0.9:iw*0.05:ih*0.05"],
        "trim_start_10": ["-ss", f"{trim:.3f}"],
        "trim_end_10": ["-t", f"{duration - trim:.3f}"],
        "bright_+10": ["-vf", "eq=brightness=0.06"],
        "fps_15": ["-vf", "fps=15"],
        "logo": ["-vf", "drawbox=x=iw*0.86:y=ih*0.86:w=iw*0.12:h=ih*0.1:color=white:t=fill"],
    }
    out = {}
    for name, args in specs.items():
        dst = out_dir / f"{src.stem}_{src.suffix[1:]}__{name}.mp4"
        cmd = [ffmpeg_exe(), "-v", "error", "-y", "-threads", "1", "-i", str(src), *args]
        if "-c:v" not in args:
            cmd += ["-c:v", "libx264", "-crf", "23"]
        cmd += ["-an", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(dst)]
        subprocess.run(cmd, check=True, timeout=120)
        out[name] = dst
    return out
