"""Model stages under the runner against their bare model forward, on the same batches, in one run.

    .venv/bin/python benchmarks/bench_models.py --quick

Inputs are made once: frame_sample's thumbnails of the real photos and videos of ../shared/data
(generated media when it is absent), tiny CLIP's embeddings of them, COCO captions, and 17-frame
128x72 H.264 clips cut from the real videos with ffmpeg. Every model is the tiny random one of
its family that `--tiny-models` builds, except the aesthetic head: a random head of LAION's real
size on 768-d embeddings, as the tiny head does a thousandth of the real one's work.

Each model stage runs as a job of its own on embedded Ray, through `run_plan` with progress on,
as `dataprep run` runs it: a source listing Parquet rows that already hold what the stage reads,
the stage (one actor of one CPU, a CPU stage's worker), and the sink. The stage is the built-in
one with a timing log (`models_bench_data.py`): wall and CPU time of each batch's start and end,
its row keys, and its model load. Then, in this process, on the same batches in the same order:
  runner  the job: from the end of its first batch to the end of its last, the gaps between batches
          included, so what the runner does between batches (handing over blocks, the per-batch
          bookkeeping, shipping results) counts; CPU time is the actor process's
  stage   the stage's `process_batch` (and `reasons`) called in a plain loop on the Arrow batches:
          the stage's own code without the runner (not with --quick)
  bare    the same model object (the stage's own, loaded by its `setup()`) called in a plain loop:
          input decoding (JPEG thumbnails, clips) included since the model cannot run without it;
          converting the batch to Python (done before the timing) and writing results back to Arrow
          left out
The first batch is left out of every side: a fresh process's first forward pays one-off costs (it
is printed). One job pass is timed, so the in-process sides get plain means, no best-of: one pass
each with --quick, three without. One thread everywhere.

Batch sizes are the stages' defaults, as a job would run them (text_embed's are 16 rows instead of
64, to keep --quick short), and each job has rows for eight of them (`ENTRIES`): the runner's cost
is per batch (a Ray Data task per batch of whole blocks here), so a ratio measured on batches much
shorter than a real model's says little. With tiny models a batch takes 80-650 ms on one core; the
aesthetic head is LAION's real size (4,000 rows, ~100 ms). A real checkpoint makes every other
stage's batches seconds long and its ratio smaller: the fixed milliseconds per batch (runner time
minus bare time, per batch) are printed for each stage so that the ratio can be recomputed for any
batch length. --quick and the full run have the same batch sizes; the full run has four times the rows,
three passes of the in-process sides, and the stage side (left out of --quick to keep it under two
minutes: the runner and the bare loop are what the target compares).

One line per stage: rows/s of the three sides, and overhead = side time / bare time - 1 in wall
time and in CPU time (CPU time does not grow when other jobs share the machine, wall time does),
with the extra milliseconds per batch (the runner's fixed cost per batch). The last line is
`overhead=X actor_start_s=Y`: X the worst stage's runner wall overhead (target <= 0.10), Y the time
from `run_plan`'s call to the first batch of its stage for the slowest stage (listing, Ray Data's
start, the actor's start and model load), plus the time embedded Ray takes to start (measured once,
before the first job: a job started alone pays it).

On a shared machine, wall times favour the bare side: Ray runs its workers at niceness 15, so other
jobs take CPU from the stage's actor first. The CPU-time overhead is the fair figure there; or give
both sides the same priority: `RAY_worker_niceness=0 nice -n -10 .venv/bin/python ...` (as root).
"""

from __future__ import annotations

import os

# One thread per side, honestly: no BLAS/OpenMP pools anywhere (set before numpy loads; Ray's workers inherit it).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"
# Every model here is a local tiny one: never wait on the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR))  # the plugin module, here and (through PYTHONPATH) on Ray's workers

import models_bench_data  # noqa: E402

from dataprep import columns  # noqa: E402

DEFAULT_DATA = BENCH_DIR.parents[1] / "shared" / "data"
# Videos of the data that frame_sample cannot decode (it would reject them before any model stage).
UNDECODABLE = {"decord_corrupted.mp4"}
# The VAE's clips: 17 frames (4k+1, two latent frames and more for Wan's 4x temporal compression), 128x72 px
# (multiples of its 8 px): small enough that a tiny VAE encodes a batch in a fraction of a second on a CPU.
CLIP_FRAMES, CLIP_SIZE = 17, (128, 72)
# Width of OpenAI ViT-L/14's embeddings, which LAION's aesthetic head reads.
LAION_DIM = 768
Inputs = Any  # one batch as the bare loop takes it (Python lists, numpy arrays)


@dataclass(frozen=True)
class Material:
    """The prepared inputs every stage's rows are made from."""

    frames: pa.Table  # key, source, media_type, frames, clip_embedding: one row per real image and video
    captions: list[str]
    clips: pa.Table  # key, source, media: one 128x72 clip per real video
    head: Path  # a random aesthetic head of the real LAION size (see `laion_size_head`)
    stub: Path  # a 1-byte file: the source of the aesthetic head's rows (see `rows_laion_embeddings`)


@dataclass(frozen=True)
class Bare:
    """A stage's bare side: the batch's inputs as Python (made outside the timing), the model call on them, and
    whether its result is what the stage wrote for the batch (so both sides are known to do the same work)."""

    inputs: Callable[[pa.Table], Inputs]
    run: Callable[[Inputs], Any]
    same: Callable[[pa.Table, Any], bool]


@dataclass(frozen=True)
class Entry:
    """A model stage to time: the rows it reads, its options, its bare side and rows per job."""

    name: str
    columns: tuple[str, ...]  # the prepared columns its rows carry besides key and source
    rows: Callable[[Material], pa.Table]  # one copy of its input rows
    bare: Callable[[Any], Bare]  # from the stage, set up
    quick_rows: int  # rows of its job with --quick (x4 without); on 2 CPUs the runner makes 8 blocks of them
    options: Callable[[Material], dict[str, Any]]  # the stage's options in the job
    tiny: bool = True  # run with the tiny models of `--tiny-models` (else with the models `options` name)


# ---------------------------------------------------------------------------------------------- inputs


def _ffmpeg(*args: str) -> None:
    from dataprep.ffmpeg import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def media_files(data: Path, scratch: Path) -> tuple[list[Path], list[Path]]:
    """The real images and decodable videos, or a few generated with ffmpeg when `data` is absent."""
    if (data / "images").is_dir() and (data / "videos").is_dir():
        images = sorted(p for p in (data / "images").iterdir() if not p.name.startswith("."))
        videos = sorted(p for p in (data / "videos").iterdir() if p.name not in UNDECODABLE)
        return images, videos
    print(f"{data} not found: generating images and videos with ffmpeg")
    images, videos = [], []
    for i, source in enumerate(("testsrc2", "mandelbrot", "smptebars", "life")):
        image, video = scratch / f"gen{i}.jpg", scratch / f"gen{i}.mp4"
        _ffmpeg("-f", "lavfi", "-i", f"{source}=s=640x480", "-frames:v", "1", str(image))
        _ffmpeg("-f", "lavfi", "-i", f"{source}=s=640x360:r=24", "-t", "3", "-c:v", "libx264", "-pix_fmt",
                "yuv420p", str(video))
        images.append(image)
        videos.append(video)
    return images, videos


def _key(path: Path) -> str:
    return columns.safe_key(path.name.replace(".", "_"))  # with the extension: test.avi and test.mp4 differ


def sample_frames(images: list[Path], videos: list[Path], clip: Any, scratch: Path) -> pa.Table:
    """frame_sample's thumbnails of every image and video, with tiny CLIP's `clip_embedding` of them.

    Each row's `source` becomes its first thumbnail, saved in `scratch`: the sink copies a row's source
    into its shard, and copying the 12 MB of photos once per copy of the rows would only load the machine.
    """
    from dataprep.stages.video.frames import FrameSample

    rows = [{"key": _key(p), "source": str(p), "media_type": "image"} for p in images]
    rows += [{"key": _key(p), "source": str(p), "media_type": "video"} for p in videos]
    table = FrameSample().process_batch(pa.Table.from_pylist(rows))
    table = clip.process_batch(table.drop_columns(["_reject"]))
    table = table.filter(pc.is_null(table.column("_reject"))).drop_columns(["_reject"])
    sources = []
    for key, frames in zip(table.column("key").to_pylist(), table.column("frames").to_pylist(), strict=True):
        sources.append(scratch / f"thumb-{key}.jpg")
        sources[-1].write_bytes(frames[0])
    return table.set_column(table.schema.get_field_index("source"), "source", pa.array(map(str, sources)))


def make_clips(videos: list[Path], scratch: Path) -> pa.Table:
    """One CLIP_FRAMES-frame CLIP_SIZE H.264 clip from the start of each video, as standardize's `media` bytes."""
    from dataprep.stages.models.vae_frames import decode_clip

    rows = []
    for path in videos:
        out = scratch / f"clip-{path.stem}.mp4"
        _ffmpeg("-i", str(path), "-vf", f"scale={CLIP_SIZE[0]}:{CLIP_SIZE[1]},setsar=1", "-frames:v",
                str(CLIP_FRAMES), "-an", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(out))
        if len(decode_clip(out.read_bytes())) == CLIP_FRAMES:  # a video shorter than that would make another shape
            rows.append({"key": _key(path), "source": str(out), "media": out.read_bytes()})
    return pa.Table.from_pylist(rows)


def coco_captions(data: Path, count: int) -> list[str]:
    """The first `count` COCO captions of the data, or a few fixed ones when it is absent."""
    path = data / "text" / "coco_captions_val2017.annotations.jsonl"
    if not path.is_file():
        return ["a dog runs on a beach at sunset", "two people ride bicycles down a city street",
                "a bowl of fruit on a wooden kitchen table", "an aerial view of a snowy mountain range"]
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line)["caption"].strip() for _, line in zip(range(count), lines)]


def laion_size_head(dest: Path) -> Path:
    """A random head in LAION's improved-aesthetic-predictor layout and size (768 -> 1024 -> 128 -> 64 -> 16 -> 1).

    The tiny head (32 -> 16 -> 8 -> 8 -> 4 -> 1) does a thousandth of the real one's work: any runner's
    per-batch cost would swamp it, and the real size costs only milliseconds per batch on a CPU.
    """
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    widths = (LAION_DIM, 1024, 128, 64, 16, 1)
    state = {}
    for n, index in enumerate((0, 2, 4, 6, 7)):
        fan_in = widths[n]
        state[f"layers.{index}.weight"] = (rng.uniform(-1, 1, (widths[n + 1], fan_in)) / fan_in**0.5).astype(np.float32)
        state[f"layers.{index}.bias"] = np.zeros(widths[n + 1], np.float32)
    save_file(state, str(dest))
    return dest


def prepare(data: Path, scratch: Path, tiny_models: str) -> Material:
    """Every input, made once before any timing."""
    from dataprep.stages.models.clip import DEFAULT_MODEL, ClipEmbed
    from dataprep.stages.models.load import build_tiny

    images, videos = media_files(data, scratch)
    clip = ClipEmbed(model=build_tiny("open_clip", DEFAULT_MODEL, tiny_models), device="cpu")
    clip.setup()
    stub = scratch / "stub.jpg"
    stub.write_bytes(b"\0")
    return Material(frames=sample_frames(images, videos, clip, scratch), captions=coco_captions(data, 1000),
                    clips=make_clips(videos, scratch), head=laion_size_head(scratch / "laion_size_head.safetensors"),
                    stub=stub)


# ------------------------------------------------------------------------------------ rows per stage


def _with_captions(table: pa.Table, captions: list[str]) -> pa.Table:
    return table.append_column(columns.CAPTION, pa.array([captions[i % len(captions)]
                                                          for i in range(table.num_rows)], pa.string()))


def rows_frames(m: Material) -> pa.Table:
    """What frame_sample leaves: thumbnails of images and videos."""
    return m.frames.select(["key", "source", "media_type", "frames"])


def rows_laion_embeddings(m: Material) -> pa.Table:
    """What clip_embed with OpenAI's ViT-L/14 leaves: a 768-d unit embedding per row (random: the head's cost
    does not depend on the values).

    Each row's source is a 1-byte stub: the sink copies every row's source into its shard, and the head's job
    has 32,000 rows; 360 MB of thumbnails copied on the second CPU would time the sink, not the stage.
    """
    base = m.frames.select(["key", "media_type"])
    base = base.add_column(1, "source", pa.array([str(m.stub)] * base.num_rows, pa.string()))
    x = np.random.default_rng(0).standard_normal((base.num_rows, LAION_DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return base.append_column("clip_embedding", pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), LAION_DIM))


def rows_captioned_embeddings(m: Material) -> pa.Table:
    """What tiny clip_embed leaves, with a COCO caption each."""
    return _with_captions(m.frames.select(["key", "source", "media_type", "clip_embedding"]), m.captions)


def rows_captions(m: Material) -> pa.Table:
    """A text-only dataset: one COCO caption per row, as ingest lists a manifest of texts."""
    n = len(m.captions)
    return pa.table({"key": [f"caption_{i}" for i in range(n)], "source": [f"captions.jsonl#{i + 1}" for i in range(n)],
                     "media_type": ["text"] * n, columns.CAPTION: m.captions})


def rows_clips(m: Material) -> pa.Table:
    """What standardize leaves: one short clip per video, in `media`."""
    n = m.clips.num_rows
    return m.clips.append_column("media_type", pa.array(["video"] * n)).append_column(
        columns.MEDIA_EXT, pa.array(["mp4"] * n))


def rows_captioned_frames(m: Material) -> pa.Table:
    """Thumbnails with a COCO caption each, what vlm_caption reads."""
    return _with_captions(rows_frames(m), m.captions)


def _rekey(table: pa.Table, copy: int) -> pa.Table:
    """`table` with keys made unique for copy number `copy`: the runner keeps one row per key."""
    keys = [f"{k}_{copy}" for k in table.column("key").to_pylist()]
    return table.set_column(table.schema.get_field_index("key"), "key", pa.array(keys, pa.string()))


def job_rows(entry: Entry, m: Material, count: int) -> pa.Table:
    """`count` rows: copies of the stage's input rows, each with its own keys."""
    base = entry.rows(m)
    return pa.concat_tables([_rekey(base, n) for n in range(-(-count // base.num_rows))]).slice(0, count)


# -------------------------------------------------------------------------------------- bare sides


def bare_clip(stage: Any) -> Bare:
    """Decode each row's thumbnails, embed them in one forward pass, average per row."""
    from PIL import Image

    from dataprep.stages.quality.frames_io import decode_frames

    def run(rows: list[list[bytes]]) -> np.ndarray:
        images, owner = [], []
        for i, frames in enumerate(rows):
            for bgr in decode_frames(frames):
                images.append(Image.fromarray(bgr[:, :, ::-1]))
                owner.append(i)
        sums = np.zeros((len(rows), stage.clip.dim), np.float32)
        np.add.at(sums, np.asarray(owner), stage.clip.embed_images(images))
        return sums / np.linalg.norm(sums, axis=1, keepdims=True)

    return Bare(lambda b: b.column("frames").to_pylist(), run,
                lambda out, x: np.allclose(_embeddings(out), x, atol=1e-5))


def _embeddings(batch: pa.Table) -> np.ndarray:
    column = batch.column("clip_embedding").combine_chunks()
    return column.values.to_numpy().reshape(len(column), -1)


def _floats(batch: pa.Table, column: str) -> np.ndarray:
    return np.asarray(batch.column(column).to_pylist(), np.float32)


def bare_aesthetic(stage: Any) -> Bare:
    """The head on the batch's embedding matrix."""
    return Bare(_embeddings, lambda x: stage.head(x),
                lambda out, x: np.allclose(_floats(out, "aesthetic_score"), x[:, 0], rtol=1e-4, atol=1e-4))


def bare_clip_similarity(stage: Any) -> Bare:
    """Embed the captions in one forward pass of CLIP's text tower; cosine with each row's embedding."""
    def run(inputs: tuple[np.ndarray, list[str]]) -> np.ndarray:
        image, captions = inputs
        return (image * stage.clip.embed_texts(captions)).sum(axis=1)

    return Bare(lambda b: (_embeddings(b), b.column(columns.CAPTION).to_pylist()), run,
                lambda out, x: np.allclose(_floats(out, "clip_similarity"), x, atol=1e-5))


def bare_text_embed(stage: Any) -> Bare:
    """Every encoder on the batch's captions, padded to the stage's token length."""
    from dataprep.stages.models.text_encoders import output_columns

    def run(captions: list[str]) -> list[Any]:
        return [stage.models[e].encode(captions, stage._length(e)) for e in stage.encoders]

    def same(out: pa.Table, encoded: list[Any]) -> bool:
        for encoder, (states, tokens, _) in zip(stage.encoders, encoded, strict=True):
            embedding, counts, _ = output_columns(encoder, columns.CAPTION)
            first = np.asarray(out.column(embedding)[0].as_py(), np.float32)  # float16 in the stage's column
            if out.column(counts).to_pylist() != tokens.tolist() or not np.allclose(first, states[0], atol=1e-2):
                return False
        return True

    return Bare(lambda b: b.column(columns.CAPTION).to_pylist(), run, same)


def bare_vae(stage: Any) -> Bare:
    """Decode each clip, trim it to the frames the VAE takes, encode the batch in one forward pass."""
    import torch

    from dataprep.stages.models.vae_frames import decode_clip, to_pixels, valid_frames

    def run(clips: list[bytes]) -> Any:
        frames = [decode_clip(data) for data in clips]
        frames = [f[:valid_frames(len(f), stage.vae.temporal)] for f in frames]
        return stage.vae.encode(torch.stack([to_pixels(f) for f in frames]))  # (B, C, t, h, w)

    def same(out: pa.Table, latents: Any) -> bool:  # the stage stores float16
        return np.allclose(np.asarray(out.column("latent")[0].as_py(), np.float32), latents[0].numpy(), atol=1e-2)

    return Bare(lambda b: b.column(columns.MEDIA).to_pylist(), run, same)


def bare_vlm(stage: Any) -> Bare:
    """Chat-template each row's prompt with its pictures, generate the batch greedily, decode the new tokens."""
    import torch
    from PIL import Image

    from dataprep.stages.models.vlm_prompt import render_prompt

    p = stage.params
    loaded = stage.backend.loaded
    processor = loaded.processor

    def run(rows: list[dict[str, Any]]) -> list[str]:
        texts, images, videos, metadata = [], [], [], []
        for row in rows:
            pictures = []
            for data in row["frames"]:
                picture = Image.open(io.BytesIO(data)).convert("RGB")
                picture.thumbnail((p.max_side, p.max_side))
                pictures.append(picture)
            video = row["media_type"] == "video" and len(pictures) > 1
            parts = [{"type": "video"}] if video else [{"type": "image"}] * len(pictures)
            text = {"type": "text", "text": render_prompt(p.prompt, row, len(pictures))}
            texts.append(processor.apply_chat_template([{"role": "user", "content": [*parts, text]}],
                                                       tokenize=False, add_generation_prompt=True))
            if video:
                videos.append(pictures)
                metadata.append({"fps": None, "total_num_frames": len(pictures), "duration": None})
            else:
                images.append(pictures)
        extra = {"images": images} if images else {}
        if videos:
            extra.update(videos=videos, video_metadata=metadata)
        inputs = processor(text=texts, padding=True, return_tensors="pt", **extra)
        with torch.inference_mode():
            out = loaded.model.generate(**inputs, max_new_tokens=p.max_new_tokens, do_sample=False)
        return processor.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def same(out: pa.Table, texts: list[str]) -> bool:  # the stage keeps the original caption when none came
        made = [c for c, s in zip(out.column("caption_vlm").to_pylist(), out.column("caption_source").to_pylist(),
                                  strict=True) if s == "vlm"]
        return made == [t.strip() for t in texts if t.strip()]

    return Bare(lambda b: b.select([columns.CAPTION, "media_type", "frames"]).to_pylist(), run, same)


def _cpu(m: Material) -> dict[str, Any]:
    return {"device": "cpu"}


# Rows per job: eight batches of the stage's default batch size (text_embed: 16 rows instead of 64, to keep --quick
# short), so the job is eight tasks of whole blocks. On 2 CPUs the runner lists a job of N rows (up to 8,000) as 8
# blocks of N/8 rows, and 1,000-row blocks above that.
ENTRIES = [
    Entry("clip_embed", ("media_type", "frames"), rows_frames, bare_clip, 512, _cpu),
    # The real-size head, recording scores only (as a tiny run does): random scores would drop rows at random. Its
    # batches of 4,096 rows take 4 blocks of 1,000 (4,000 rows).
    Entry("aesthetic_filter", ("media_type", "clip_embedding"), rows_laion_embeddings, bare_aesthetic, 32000,
          lambda m: {"head": str(m.head), "min_score": None}, tiny=False),
    Entry("clip_similarity_filter", ("media_type", "caption", "clip_embedding"), rows_captioned_embeddings,
          bare_clip_similarity, 2048, _cpu),
    Entry("text_embed", ("media_type", "caption"), rows_captions, bare_text_embed, 128,
          lambda m: {"device": "cpu", "batch_size": 16}),
    Entry("vae_latents", ("media_type", "media", "media_ext"), rows_clips, bare_vae, 32, _cpu),
    Entry("vlm_caption", ("media_type", "caption", "frames"), rows_captioned_frames, bare_vlm, 128, _cpu),
]


# -------------------------------------------------------------------------------------- measuring


@dataclass
class Batch:
    """One batch the stage ran under the runner: its rows and when it started and ended (wall, actor CPU)."""

    keys: list[str]
    pid: int
    start: float
    end: float
    cpu_start: float
    cpu_end: float


@dataclass(frozen=True)
class Timing:
    """Wall and CPU seconds one side took over batches 2..n."""

    wall: float
    cpu: float | None  # None when more than one actor ran (their CPU clocks do not add up)


@dataclass(frozen=True)
class Result:
    """What one stage's job and its in-process passes measured."""

    name: str
    rows: int
    batches: int
    timed_rows: int  # rows of batches 2..n
    batch_rows: int  # rows of the largest batch
    runner: Timing  # the stage under the runner
    stage: Timing | None  # the stage's process_batch (and reasons) in a plain loop (its own code); None with --quick
    bare: Timing  # the model called in a plain loop
    first_batch_s: float
    setup_s: float  # the actor's model load
    start_s: float  # run_plan called -> first batch started

    @property
    def overhead(self) -> float:
        """Extra wall time of the stage under the runner over the bare loop, as a fraction of the bare time."""
        return self.runner.wall / self.bare.wall - 1

    @property
    def fixed_ms(self) -> float:
        """The runner's extra wall milliseconds per batch over the bare loop."""
        return 1000 * (self.runner.wall - self.bare.wall) / (self.batches - 1)

    @property
    def cpu_overhead(self) -> float:
        """The same in CPU time (nan when it was not measured)."""
        return self.runner.cpu / self.bare.cpu - 1 if self.runner.cpu is not None and self.bare.cpu else float("nan")

    def line(self) -> str:
        """One line of this stage's figures."""
        def extra(side: Timing) -> str:
            cpu = f"{side.cpu / self.bare.cpu - 1:+.3f}" if side.cpu is not None and self.bare.cpu else "n/a"
            ms = 1000 * (side.wall - self.bare.wall) / (self.batches - 1)
            return f"{side.wall / self.bare.wall - 1:+.3f} wall, {cpu} CPU, {ms:+.1f} ms/batch"

        rate = "/".join(f"{self.timed_rows / t.wall:.1f}" if t else "-" for t in (self.runner, self.stage, self.bare))
        alone = f" (stage code alone {extra(self.stage)})" if self.stage else ""
        return (f"{self.name}: {self.rows} rows, {self.batches} batches of {self.batch_rows}; rows/s runner/stage/bare "
                f"{rate} (batches 2-{self.batches}); overhead {extra(self.runner)}{alone}; "
                f"first batch {self.first_batch_s:.2f} s, model load {self.setup_s:.2f} s, "
                f"run_plan to first batch {self.start_s:.2f} s")


def logged_batches(events: list[dict[str, Any]]) -> tuple[list[Batch], float]:
    """The batches in the order they started, and the seconds `setup` took (the model load)."""
    open_: dict[tuple[int, int], Batch] = {}
    setup: dict[str, float] = {}
    for e in events:
        where = (e["pid"], e["batch"])
        if e["event"] == "start":
            open_[where] = Batch(e["keys"], e["pid"], e["t"], e["t"], e["cpu"], e["cpu"])
        elif e["event"] == "end":  # a filter logs two ends (process_batch, reasons): the later one counts
            open_[where].end, open_[where].cpu_end = e["t"], e["cpu"]
        else:
            setup[e["event"]] = e["t"]
    return sorted(open_.values(), key=lambda b: b.start), setup["setup_end"] - setup["setup_start"]


def runner_timing(batches: list[Batch]) -> Timing:
    """From the end of the first batch to the end of the last, gaps between batches included."""
    first, last = batches[0], batches[-1]
    one_actor = len({b.pid for b in batches}) == 1
    return Timing(last.end - first.end, last.cpu_end - first.cpu_end if one_actor else None)


def in_process(sides: dict[str, Callable[[int], Any]], batches: int, passes: int) -> dict[str, Timing]:
    """Mean wall and CPU seconds of each side's plain loop over batches 2..n; batch 1 warms each side up, untimed.

    `sides` maps a name to a function running batch i; passes of the sides alternate, so load that comes
    and goes on the machine falls on all of them.
    """
    for run in sides.values():
        run(0)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    for _ in range(passes):
        for name, run in sides.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(1, batches):
                run(i)
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {name: Timing(statistics.mean(t[0] for t in ts), statistics.mean(t[1] for t in ts))
            for name, ts in times.items()}


def measure(entry: Entry, m: Material, scratch: Path, rows: int, passes: int, tiny_models: str, *,
            stage_side: bool) -> Result:
    """Run `entry`'s stage as a job, then the bare loop (and with `stage_side` the stage's own code) in this
    process on the batches the job ran."""
    import pyarrow.parquet as pq

    from dataprep.config import parse_config
    from dataprep.plan import build_plan
    from dataprep.runner import run_plan
    from dataprep.stage import Filter

    table = job_rows(entry, m, rows)
    source = scratch / f"{entry.name}.parquet"
    pq.write_table(table, source)
    config = parse_config({
        "input": str(source), "output": str(scratch / f"out-{entry.name}"), "plugins": [models_bench_data.__name__],
        "stages": [{"stage": "bench_rows", "columns": list(entry.columns)},
                   # One actor: the stage's throughput per worker, against one plain loop.
                   {"stage": entry.name, "concurrency": 1, **entry.options(m)}],
    })
    plan = build_plan(config, tiny_models=tiny_models if entry.tiny else None)
    planned = plan.stages[0]
    # The in-process sides' stage: the built-in class (the timed one's last base) with the job's options, loaded
    # before the job so no side pays for it.
    stage = planned.cls.__bases__[-1](planned.params)
    stage.resources = planned.resources
    stage.setup()
    start = time.time()
    run_plan(plan, progress=True)
    batches, setup_s = logged_batches(models_bench_data.read_events(scratch / "timings", entry.name))
    if len(batches) < 2:
        raise SystemExit(f"{entry.name}: the job ran {len(batches)} batch(es); rerun with more rows")
    where = {k: i for i, k in enumerate(table.column("key").to_pylist())}
    tables = [table.take(pa.array([where[k] for k in b.keys])) for b in batches]
    bare = entry.bare(stage)
    inputs = [bare.inputs(t) for t in tables]  # made outside the timing: the bare loop starts from Python objects
    if not bare.same(stage.process_batch(tables[0]), bare.run(inputs[0])):
        raise SystemExit(f"{entry.name}: the bare loop's result differs from the stage's; they do not do the same work")

    def run_stage(i: int) -> None:
        out = stage.process_batch(tables[i])
        if isinstance(stage, Filter):
            stage.reasons(out)

    sides = in_process({"stage": run_stage, "bare": lambda i: bare.run(inputs[i])} if stage_side else
                       {"bare": lambda i: bare.run(inputs[i])}, len(batches), passes)
    stage.teardown()
    return Result(
        name=entry.name, rows=sum(len(b.keys) for b in batches), batches=len(batches),
        timed_rows=sum(len(b.keys) for b in batches[1:]), batch_rows=max(len(b.keys) for b in batches),
        runner=runner_timing(batches), stage=sides.get("stage"),
        bare=sides["bare"], first_batch_s=batches[0].end - batches[0].start, setup_s=setup_s,
        start_s=batches[0].start - start)


def start_ray(scratch: Path) -> float:
    """Start embedded Ray as a job would (`init_ray`), with the plugin module importable; its seconds."""
    from dataprep.config import parse_config
    from dataprep.plan import build_plan
    from dataprep.ray_init import init_ray

    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH")) if p)
    os.environ[models_bench_data.TIMINGS_ENV] = str(scratch / "timings")
    (scratch / "timings").mkdir()
    empty = scratch / "empty"
    empty.mkdir()
    plan = build_plan(parse_config({"input": str(empty), "output": str(scratch / "out"), "stages": ["ingest"]}))
    mark = time.perf_counter()
    init_ray(plan, progress=True)
    return time.perf_counter() - mark


def cpu_seconds_all() -> float:
    """CPU seconds of this process and every process it started (Ray's, and the ended ones they waited for)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for process in (me, *me.children(recursive=True)):
        try:
            t = process.cpu_times()
        except psutil.Error:  # ended meanwhile: its parent counts it once it is waited for
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def main() -> None:
    """Prepare the inputs, time every stage, print one line each and the summary line."""
    from dataprep.cli import TINY_MODELS_DIR

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the rows of each stage once (else four times), and "
                        "no in-process loop of the stage's own code")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with images/, videos/ and text/")
    parser.add_argument("--only", nargs="*", help="names of the stages to time (default: all)")
    parser.add_argument("--tiny-models", default=TINY_MODELS_DIR, help="where the tiny models are built and reused")
    args = parser.parse_args()
    entries = [e for e in ENTRIES if not args.only or e.name in args.only]
    scale, passes = (1, 1) if args.quick else (4, 3)
    begin = time.perf_counter()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the start")
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        mark = time.perf_counter()
        material = prepare(args.data, scratch, args.tiny_models)
        print(f"inputs: {material.frames.num_rows} media with thumbnails, {material.clips.num_rows} clips, "
              f"{len(material.captions)} captions, made in {time.perf_counter() - mark:.1f} s")
        ray_start_s = start_ray(scratch)
        print(f"embedded Ray started in {ray_start_s:.2f} s")
        results = []
        for entry in entries:
            results.append(measure(entry, material, scratch, entry.quick_rows * scale, passes, args.tiny_models,
                                   stage_side=not args.quick))
            print(results[-1].line(), flush=True)
        cpu_s = cpu_seconds_all()
    worst = max(results, key=lambda r: r.overhead)
    slowest = max(results, key=lambda r: r.start_s)
    worst_cpu = max(results, key=lambda r: r.cpu_overhead)
    most = max(results, key=lambda r: r.fixed_ms)
    print(f"worst overhead: {worst.name} ({worst.fixed_ms:+.1f} ms per batch of {worst.batch_rows} rows; in CPU "
          f"time: {worst_cpu.name}, {worst_cpu.cpu_overhead:+.3f}); most ms per batch: {most.name} "
          f"({most.fixed_ms:+.1f}); slowest start: {slowest.name} ({slowest.start_s:.2f} s) + Ray start "
          f"{ray_start_s:.2f} s; load average {os.getloadavg()[0]:.1f} at the end; {time.perf_counter() - begin:.0f} s "
          f"in all, {cpu_s:.0f} CPU-s in this and Ray's processes")
    print(f"overhead={worst.overhead:.3f} actor_start_s={slowest.start_s + ray_start_s:.2f}")


if __name__ == "__main__":
    main()
