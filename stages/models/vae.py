"""VAE latents: every clip or image encoded by a diffusers VAE into a float16 latent, scaled as its model trains on it.

    stages:
      - stage: vae_latents
        model: Wan-AI/Wan2.1-T2V-1.3B-Diffusers   # a diffusers pipeline: its vae/ folder is used
        min_frames: 5
        resources: {gpus: 0.5}

The family comes from the checkpoint's config (`_class_name`): AutoencoderKL for images
(SD, SDXL, FLUX: pixels (B, 3, H, W)); AutoencoderKLWan, AutoencoderKLCogVideoX or
AutoencoderKLHunyuanVideo for videos (pixels (B, 3, T, H, W); an image is encoded as a
one-frame video). Pixels are RGB in [-1, 1]. A video is the clip standardize wrote in
`media`; an image is read from `media` (image_standardize) or else from `source`.

A clip whose frame count the VAE cannot take is trimmed, and a side that is not a
multiple of the VAE's spatial compression is center-cropped (rules in `vae_frames`).
Rows of a batch with one (T, H, W) after that are encoded by one forward pass.

The latent is the mean of the VAE's posterior (`latent_dist.mode()`), not a sample of
it, so one input always gives one latent. It is scaled as the config says, the way the
model's diffusers pipeline scales it: (z - mean) * scaling_factor / std, where mean and
std are the per-channel `latents_mean`/`latents_std` when the config has them (Wan; some
SDXL-type VAEs), else `shift_factor` (0 when absent; FLUX has 0.1159) and 1, and
`scaling_factor` is 1 when absent (Wan). Columns: `latent` float16 (C, T, h, w), or
(C, h, w) for AutoencoderKL, as shard member `KEY.latent.npy`; `latent_shape` ("16x13x45x80")
and `latent_frames` (the frames of the clip the latent encodes, after trimming; 1 for an image).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataprep import arrow, columns
from dataprep.errors import Rejected
from dataprep.stage import Resources
from dataprep.stages.models.load import (ModelParams, ModelStage, load_model, loader, model_field, pick_device,
                                         pick_dtype, tiny_builder)
from dataprep.stages.models.vae_cpu import speed_up_on_cpu
from dataprep.stages.models.vae_frames import aligned_crop, decode_clip, load_image, to_pixels, valid_frames

log = logging.getLogger(__name__)

_FIELDS = pa.schema([("latent_shape", pa.string()), ("latent_frames", pa.int32())])
# The folder of a diffusers pipeline that holds its VAE.
_PIPELINE_VAE = "vae"


@dataclass(frozen=True)
class Family:
    """What a VAE class takes: videos or images, and how much it compresses space and time."""

    video: bool
    spatial: Callable[[Any], int]  # config -> px per latent px
    temporal: Callable[[Any], int]  # config -> frames per latent frame after the first (1 for images)


def _halvings(config: Any) -> int:
    # One 2x downsample between consecutive encoder blocks, as the pipelines compute `vae_scale_factor`.
    return 2 ** (len(config.block_out_channels) - 1)


FAMILIES: dict[str, Family] = {
    "AutoencoderKL": Family(False, _halvings, lambda c: 1),
    "AutoencoderKLWan": Family(True, lambda c: c.scale_factor_spatial, lambda c: c.scale_factor_temporal),
    "AutoencoderKLCogVideoX": Family(True, _halvings, lambda c: c.temporal_compression_ratio),
    "AutoencoderKLHunyuanVideo": Family(True, lambda c: c.spatial_compression_ratio,
                                        lambda c: c.temporal_compression_ratio),
}


class Vae:
    """A loaded VAE with its family's compression and the scaling its latents are stored with."""

    def __init__(self, model: Any, class_name: str) -> None:
        import torch

        self.model, self.class_name = model, class_name
        family = FAMILIES[class_name]
        config = model.config
        self.video, self.spatial, self.temporal = family.video, family.spatial(config), family.temporal(config)
        channels = config.get("z_dim") or config.latent_channels  # Wan names it z_dim
        mean = config.get("latents_mean") or [config.get("shift_factor") or 0.0] * channels
        std = config.get("latents_std") or [1.0] * channels
        shape = (1, channels, 1, 1, 1) if self.video else (1, channels, 1, 1)
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(shape)
        self.scale = (config.get("scaling_factor") or 1.0) / torch.tensor(std, dtype=torch.float32).reshape(shape)

    def encode(self, pixels: Any) -> Any:
        """Pixels (B, 3, T, H, W) in [-1, 1] -> scaled float32 latents on the CPU: (B, C, t, h, w), or (B, C, h, w)
        from an image VAE (which takes T == 1)."""
        import torch

        x = pixels.to(self.model.device, self.model.dtype)
        if not self.video:
            x = x[:, :, 0]  # (B, 3, H, W)
        with torch.inference_mode():
            z = self.model.encode(x).latent_dist.mode()  # the posterior's mean: no sampling noise
        return (z.float().cpu() - self.mean) * self.scale

    def decode(self, latents: Any) -> Any:
        """The inverse of `encode`, for checking latents: scaled latents -> pixels (B, 3, T, H, W), or (B, 3, H, W)."""
        import torch

        z = latents.float() / self.scale + self.mean
        with torch.inference_mode():
            return self.model.decode(z.to(self.model.device, self.model.dtype)).sample.float().cpu()


def pipeline_subfolder(path_or_name: str, part: str) -> str | None:
    """`part` ("vae", "text_encoder") when `path_or_name` is a diffusers pipeline (model_index.json at its top,
    each model in its own folder), else None: the model is at the top."""
    path = Path(path_or_name).expanduser()
    if path.is_dir():
        return part if (path / "model_index.json").exists() else None
    from huggingface_hub import file_exists

    return part if file_exists(path_or_name, "model_index.json") else None


@loader("vae")
def load_vae(path_or_name: str, *, device: str = "auto", dtype: str = "auto") -> Vae:
    """A diffusers VAE from a VAE folder or a pipeline folder (its `vae/`), by local path or hub name."""
    import diffusers

    subfolder = pipeline_subfolder(path_or_name, _PIPELINE_VAE)
    config = diffusers.AutoencoderKL.load_config(path_or_name, subfolder=subfolder)
    class_name = config.get("_class_name")
    if class_name not in FAMILIES:
        raise ValueError(f"model {path_or_name!r} is a {class_name}, not a VAE this stage knows; "
                         f"fix: name one of the classes {sorted(FAMILIES)}")
    torch_device = pick_device(device)
    model = getattr(diffusers, class_name).from_pretrained(
        path_or_name, subfolder=subfolder, torch_dtype=pick_dtype(dtype, torch_device))
    if torch_device.type == "cpu":
        speed_up_on_cpu(model)
    return Vae(model.to(torch_device).eval(), class_name)


def _tiny_class(name: str) -> str:
    """The VAE class of a real checkpoint, from its local config, else from its name (AutoencoderKL by default)."""
    path = Path(name).expanduser()
    for config in (path / "config.json", path / _PIPELINE_VAE / "config.json"):
        if config.is_file():
            return json.loads(config.read_text())["_class_name"]
    lowered = name.lower()
    for part, class_name in (("wan", "AutoencoderKLWan"), ("cogvideo", "AutoencoderKLCogVideoX"),
                             ("hunyuan", "AutoencoderKLHunyuanVideo")):
        if part in lowered:
            return class_name
    return "AutoencoderKL"


def _tiny_model(class_name: str, name: str) -> Any:
    """A randomly initialized VAE of `class_name` with the real compression (8x space, 4x time) and few channels."""
    import diffusers

    lowered = name.lower()
    small = {"block_out_channels": (8, 8, 8, 8), "layers_per_block": 1, "norm_num_groups": 4, "latent_channels": 4}
    if class_name == "AutoencoderKLWan":
        # Wan2.1's first four channel statistics, so the per-channel scaling is exercised. Four channels at full
        # resolution: its causal 3D convolutions over every frame made base_dim=8 take ~0.5 s per 640x360 frame on one
        # CPU thread (27 s for a 2 s clip), and tiny models are for trying a job, not for its latents.
        return diffusers.AutoencoderKLWan(base_dim=4, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                          latents_mean=[-0.7571, -0.7089, -0.9113, 0.1075],
                                          latents_std=[2.8184, 1.4541, 2.3275, 2.6558])
    if class_name == "AutoencoderKLCogVideoX":
        return diffusers.AutoencoderKLCogVideoX(**small, scaling_factor=0.7 if "5b" in lowered else 1.15258426)
    if class_name == "AutoencoderKLHunyuanVideo":
        return diffusers.AutoencoderKLHunyuanVideo(**small)
    # The real scaling of the image VAEs: FLUX shifts too, and has 16 latent channels.
    scaling = ({"scaling_factor": 0.3611, "shift_factor": 0.1159, "latent_channels": 16} if "flux" in lowered
               else {"scaling_factor": 0.13025} if "xl" in lowered else {})
    blocks = len(small["block_out_channels"])
    return diffusers.AutoencoderKL(**{**small, **scaling}, down_block_types=("DownEncoderBlock2D",) * blocks,
                                   up_block_types=("UpDecoderBlock2D",) * blocks, sample_size=32)


@tiny_builder("vae")
def build_tiny_vae(name: str, dest: Path) -> None:
    """Save into `dest` a tiny random VAE of the family of the real checkpoint `name`."""
    import torch

    class_name = _tiny_class(name)
    if class_name not in FAMILIES:
        raise ValueError(f"model {name!r} is a {class_name}, which has no tiny version; known: {sorted(FAMILIES)}")
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same tiny model on every worker and every run
        _tiny_model(class_name, name).save_pretrained(dest)


def tensor_array(values: list[np.ndarray | None], ndim: int) -> pa.Array:
    """Arrays of `ndim` dimensions (shapes may differ between rows; None for a null row) as one nested Arrow list
    column that keeps their dtype; `dataprep.members` writes each row back as an `.npy` of that shape."""
    present = [v for v in values if v is not None]
    flat = pa.array(np.concatenate([v.ravel() for v in present]) if present else np.empty(0, np.float16))
    for level in range(ndim - 1, 0, -1):
        # One list per index of the outer `level` dimensions, each of length shape[level].
        lengths = np.concatenate([np.full(int(np.prod(v.shape[:level])), v.shape[level]) for v in present]) \
            if present else np.empty(0, np.int64)
        flat = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int32()), flat)
    outer = np.cumsum([0] + [v.shape[0] if v is not None else 0 for v in values])
    return pa.ListArray.from_arrays(pa.array(outer, pa.int32()), flat,
                                    mask=pa.array([v is None for v in values], pa.bool_()))


class VaeParams(ModelParams):
    """Options of `vae_latents`."""

    model: str = model_field(
        "vae", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        "VAE to encode with: a diffusers VAE folder or pipeline folder (its vae/ is used), by hub name or local "
        "path; the class in its config picks the family. Default: the VAE every Wan2.1 model (1.3B and 14B) "
        "trains on.")
    min_frames: int = Field(
        5, ge=1, description="Fewest clip frames encoded (count, after trimming to the k*4+1 the video VAE takes: "
        "50 -> 49, the first frames kept); 5 gives two latent frames, the least that holds motion. Shorter clips "
        "are rejected as vae:too_few_frames.")
    misaligned: Literal["crop", "reject"] = Field(
        "crop", description="A side that is not a multiple of the VAE's spatial compression (8 px; 16 for "
        "Wan2.2): crop keeps the centered largest multiple (at most 7 px of 8 lost, split between both edges; "
        "the latent then covers less than the clip), reject drops the row as vae:misaligned_size.")


class VaeLatents(ModelStage):
    """Adds `latent` (float16, scaled as the model's pipeline scales it), `latent_shape` and `latent_frames`."""

    name = "vae_latents"
    reads = (columns.KEY, columns.SOURCE, "media_type")
    writes = ("latent", "latent_shape", "latent_frames")
    members: ClassVar[dict[str, str]] = {"latent": "latent.npy"}
    Params = VaeParams
    resources: ClassVar[Resources] = Resources(cpus=1.0)
    # Decoded clips are large (a 10 s 640x360 clip is 0.7 GB as float32 pixels): a few per batch.
    batch_size = 4

    def setup(self) -> None:
        """Load the VAE once per worker, on its GPU when it has one."""
        import torch

        if pick_device(self.params.device).type == "cpu":
            torch.set_num_threads(self.worker_threads())  # workers share the node's cores
        self.vae: Vae = load_model("vae", self.params.model, device=self.params.device, dtype=self.params.dtype)
        log.info("vae_latents: %s (%s) on %s", self.params.model, self.vae.class_name, self.vae.model.device)

    def teardown(self) -> None:
        """Free the VAE and its GPU memory."""
        import torch

        del self.vae
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Encode every row; rows of one (T, H, W) go through the VAE together."""
        frames = [self._guard(self._frames, row) for row in batch.to_pylist()]  # (T, H, W, 3) uint8, or why not
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, f in enumerate(frames):
            if not isinstance(f, BaseException):
                groups[f.shape].append(i)
        latents: list[Any] = list(frames)
        for indices in groups.values():
            encoded = self._guard(self._encode, [frames[i] for i in indices])
            for n, i in enumerate(indices):
                latents[i] = encoded if isinstance(encoded, BaseException) else encoded[n]
        results = [z if isinstance(z, BaseException) else
                   {"latent_shape": "x".join(map(str, z.shape)), "latent_frames": len(frames[i])}
                   for i, z in enumerate(latents)]
        table = self._assemble(batch, results, _FIELDS)
        arrays = [None if isinstance(z, BaseException) else z for z in latents]
        ndim = 4 if self.vae.video else 3
        return arrow.put(table, "latent", tensor_array(arrays, ndim), _latent_type(ndim))

    def _frames(self, row: dict[str, Any]) -> np.ndarray:
        """The row's frames as the VAE takes them: (T, H, W, 3) uint8, trimmed and cropped; raises Rejected."""
        vae, media = self.vae, row.get(columns.MEDIA)
        if row.get("media_type") == "image":
            frames = load_image(media, row.get(columns.SOURCE))
        elif row.get("media_type") == "video":
            if not vae.video:
                raise Rejected(f"vae:not_an_image: {vae.class_name} encodes images; fix: name a video VAE "
                               f"({', '.join(n for n, f in FAMILIES.items() if f.video)}) for videos")
            if media is None:
                raise Rejected("vae:no_clip: the row has no clip in `media`; fix: run standardize before vae_latents")
            frames = decode_clip(media, self.worker_threads())
            keep = valid_frames(len(frames), vae.temporal)
            if keep < self.params.min_frames:
                raise Rejected(f"vae:too_few_frames: {len(frames)} frames give {keep} the VAE takes "
                               f"(k*{vae.temporal}+1) < min_frames {self.params.min_frames}")
            frames = frames[:keep]
        else:
            raise Rejected(f"vae:media_type: {row.get('media_type')!r} is neither image nor video")
        h, w = frames.shape[1:3]
        if h % vae.spatial or w % vae.spatial:
            if self.params.misaligned == "reject":
                raise Rejected(f"vae:misaligned_size: {w}x{h} px is not a multiple of {vae.spatial} px")
            frames = aligned_crop(frames, vae.spatial)
            if 0 in frames.shape:
                raise Rejected(f"vae:too_small: {w}x{h} px is under the {vae.spatial} px of one latent pixel")
        return frames

    def _encode(self, group: list[np.ndarray]) -> list[np.ndarray | Rejected]:
        """Latents of same-shape frame stacks by one forward pass, float16 (C, t, h, w) or (C, h, w); a latent
        float16 cannot hold is that row's rejection."""
        import torch

        pixels = torch.stack([to_pixels(f) for f in group])  # (B, 3, T, H, W)
        out: list[np.ndarray | Rejected] = []
        for z in self.vae.encode(pixels).numpy():
            if np.isfinite(z).all() and np.abs(z).max() <= np.finfo(np.float16).max:
                out.append(z.astype(np.float16))
            else:
                out.append(Rejected("vae:non_finite: the latent has NaN or values beyond float16; fix: dtype "
                                    "float32 or bfloat16 (SD-type VAEs overflow in float16)"))
        return out


def _latent_type(ndim: int) -> pa.DataType:
    type_: pa.DataType = pa.float16()
    for _ in range(ndim):
        type_ = pa.list_(type_)
    return type_
