"""CLIP image embeddings, computed once per row for every stage that scores with CLIP.

    stages:
      - stage: frame_sample
      - stage: clip_embed
        model: timm/vit_large_patch14_clip_224.openai
        resources: {gpus: 1}

`clip_embed` embeds each thumbnail in `frames` with an open_clip model and writes
`clip_embedding`: the L2-normalized mean of the row's normalized frame embeddings, float32,
one fixed-size vector per row (the shard member `KEY.clip_embedding.npy`). The aesthetic,
watermark and caption-similarity filters and semantic dedup read it instead of running CLIP again.

A model is named as everywhere in dataprep (`stages/models/load.py`): a local folder holding
`open_clip_config.json` and the weights (the layout open_clip pushes to the hub), or a hub repo
id of that layout ("laion/CLIP-ViT-B-32-laion2B-s34B-b79K"; open_clip's `hf-hub:` and
`local-dir:` prefixes are accepted and dropped). open_clip's built-in pretrained tags are hub
repos too: `open_clip.get_pretrained_cfg("ViT-L-14", "openai")["hf_hub"]` names it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
from pydantic import field_validator

from dataprep import arrow
from dataprep.stage import Resources
from dataprep.stages.models.load import ModelParams, ModelStage, load_model, loader, model_field, pick_device, \
    pick_dtype, tiny_builder
from dataprep.stages.quality.frames_io import FrameDecodeError, decode_frames

if TYPE_CHECKING:
    import numpy as np

EMBEDDING = "clip_embedding"
# OpenAI's CLIP ViT-L/14: the embedding space LAION's aesthetic predictor was trained on.
DEFAULT_MODEL = "timm/vit_large_patch14_clip_224.openai"
# Width of the tiny random CLIP that `--tiny-models` swaps in; tiny heads take this many inputs.
TINY_EMBED_DIM = 32
_CONFIG = "open_clip_config.json"
_WEIGHTS = "open_clip_model.safetensors"
_PRECISION = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
_SCHEMES = ("hf-hub:", "local-dir:")


class EmbeddingMismatchError(ValueError):
    """`clip_embedding` has another width than the model reading it takes: every row would fail."""


def clip_model_field(description: str) -> Any:
    """The `model` option of a stage that runs open_clip."""
    return model_field("open_clip", DEFAULT_MODEL, description)


def plain_name(name: str) -> str:
    """`name` without open_clip's `hf-hub:`/`local-dir:` prefix: load_model resolves hub ids and paths itself."""
    for scheme in _SCHEMES:
        if name.startswith(scheme):
            return name[len(scheme):]
    return name


class ClipParams(ModelParams):
    """Options of a stage that runs an open_clip model."""

    model: str = clip_model_field(
        "open_clip model: hub repo id or local folder with open_clip_config.json and weights. Default OpenAI "
        "ViT-L/14, whose 768-d embeddings LAION's aesthetic predictor reads; ViT-B/32 costs 1/18 of its FLOPs.")

    @field_validator("model")
    @classmethod
    def _plain(cls, value: str) -> str:
        return plain_name(value)


class ClipModel:
    """A loaded open_clip model with its preprocessing and tokenizer; embeds images and texts."""

    def __init__(self, model: Any, preprocess: Any, tokenizer: Any, *, dim: int, device: Any, dtype: Any) -> None:
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.dim = dim
        self.device = device
        self.dtype = dtype

    def embed_images(self, images: list[Any]) -> np.ndarray:
        """Unit-length embeddings (N, D) float32 of PIL images, in one forward pass."""
        import torch

        pixels = torch.stack([self.preprocess(image) for image in images])  # (N, 3, S, S)
        with torch.inference_mode():
            out = self.model.encode_image(pixels.to(self.device, self.dtype))
        return _unit(out)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Unit-length embeddings (N, D) float32 of texts (truncated to the model's context), in one forward pass."""
        import torch

        tokens = self.tokenizer(texts)  # (N, context_length)
        with torch.inference_mode():
            out = self.model.encode_text(tokens.to(self.device))
        return _unit(out)


def _unit(out: Any) -> np.ndarray:
    # Normalized in float32: in bfloat16 a unit vector's length is only good to about 1e-2.
    x = out.float().cpu().numpy()
    return x / _norm(x)


def _norm(x: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@loader("open_clip")
def load_open_clip(path_or_name: str, *, device: Any = None, dtype: Any = None) -> ClipModel:
    """An open_clip model from a local folder (open_clip_config.json + weights), else a hub repo of that layout."""
    import open_clip
    import torch

    device = device or torch.device("cpu")
    dtype = dtype or torch.float32
    source = f"local-dir:{path_or_name}" if Path(path_or_name).is_dir() else f"hf-hub:{path_or_name}"
    model, preprocess = open_clip.create_model_from_pretrained(
        source, precision=_PRECISION[str(dtype).removeprefix("torch.")], device=device)
    dim = open_clip.get_model_config(source)["embed_dim"]  # timm towers have no `output_dim` to read it from
    return ClipModel(model, preprocess, open_clip.get_tokenizer(source), dim=dim, device=device, dtype=dtype)


@tiny_builder("open_clip")
def build_tiny_clip(name: str, dest: Path) -> None:
    """Save a random two-layer CLIP (32-px images, TINY_EMBED_DIM-d embeddings) as open_clip's folder layout."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    config = {
        "model_cfg": {
            "embed_dim": TINY_EMBED_DIM,
            "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "head_width": 16, "layers": 2},
            # The real tokenizer's vocabulary, so captions tokenize exactly as for a real CLIP.
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
        },
        "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)},
    }
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same tiny model on every machine
        model = open_clip.CLIP(**config["model_cfg"])
    (dest / _CONFIG).write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dest / _WEIGHTS))


def load_clip(params: ClipParams, threads: int) -> ClipModel:
    """The model `params` name, on their device in their precision; on a CPU it uses `threads` cores."""
    import torch

    device = pick_device(params.device)
    if device.type == "cpu":
        torch.set_num_threads(threads)  # workers share the node's cores
    return load_model("open_clip", params.model, device=device, dtype=pick_dtype(params.dtype, device))


def missing_embedding(family: str) -> str:
    """The reject reason for a row that reached a CLIP filter without an embedding."""
    return f"{family}:no_embedding: the row has no {EMBEDDING}; fix: run clip_embed before this filter"


def embedding_matrix(batch: pa.Table, column: str = EMBEDDING) -> tuple[np.ndarray, list[bool]]:
    """`column` as an (N, D) float32 matrix (zeros where null) and which rows have a value.

    The matrix may be a read-only view of the batch's buffer: callers compute from it, never into it.
    """
    import numpy as np

    array = batch.column(column).combine_chunks()
    if pa.types.is_fixed_size_list(array.type) and len(array):
        # Straight from the Arrow buffer: a Python list per row costs 100x more on wide batches.
        width = array.type.list_size
        values = array.values.slice(array.offset * width, len(array) * width)
        matrix = np.asarray(values.to_numpy(zero_copy_only=False), np.float32).reshape(len(array), width)
        if array.null_count == 0:
            return matrix, [True] * len(array)
        present = array.is_valid().to_numpy(zero_copy_only=False).astype(bool)
        matrix = matrix.copy()  # Arrow's buffer is read-only; a null row's slot may hold anything
        matrix[~present] = 0.0
        return matrix, present.tolist()
    values = array.to_pylist()
    present = [v is not None for v in values]
    width = next((len(v) for v in values if v is not None), 0)
    rows = [np.asarray(v, np.float32) if v is not None else np.zeros(width, np.float32) for v in values]
    return (np.stack(rows) if rows else np.zeros((0, width), np.float32)), present


def check_width(width: int, expected: int, reader: str, fix: str) -> None:
    """Raise `EmbeddingMismatchError` when `clip_embedding` rows are `width`-d but `reader` takes `expected`."""
    if width != expected:
        raise EmbeddingMismatchError(f"`{EMBEDDING}` holds {width}-d embeddings but {reader} takes {expected}-d "
                                     f"ones; fix: {fix}")


class ClipEmbed(ModelStage):
    """Adds `clip_embedding`: the normalized mean CLIP embedding of a row's thumbnails."""

    name = "clip_embed"
    reads = ("frames",)
    writes = (EMBEDDING,)
    members: ClassVar[dict[str, str]] = {EMBEDDING: f"{EMBEDDING}.npy"}
    Params = ClipParams
    resources: ClassVar[Resources] = Resources(cpus=1.0)
    # Rows per forward pass: 64 rows of 4 thumbnails are 256 images, enough to keep a GPU busy.
    batch_size = 64

    def setup(self) -> None:
        """Load the model once per worker."""
        self.clip = load_clip(self.params, self.worker_threads())

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Embed every thumbnail of the batch at once; a row with an undecodable thumbnail is rejected."""
        import numpy as np
        from PIL import Image

        images: list[Any] = []
        owner: list[int] = []
        reasons: list[str | None] = []
        for i, frames in enumerate(batch.column("frames").to_pylist()):
            try:
                decoded = decode_frames(frames)
            except FrameDecodeError as exc:
                reasons.append(f"clip:bad_frames: {exc}")
                continue
            reasons.append(None)
            images.extend(Image.fromarray(bgr[:, :, ::-1]) for bgr in decoded)
            owner.extend([i] * len(decoded))
        dim = self.clip.dim
        sums = np.zeros((batch.num_rows, dim), np.float32)
        if images:
            np.add.at(sums, np.asarray(owner), self.clip.embed_images(images))  # (rows, D): sum of unit vectors
        means = sums / _norm(sums)  # the direction of the mean is the direction of the sum
        valid = np.asarray([r is None for r in reasons])
        values = pa.FixedSizeListArray.from_arrays(pa.array(means.reshape(-1)), dim,
                                                   mask=pa.array(~valid))
        return arrow.set_rejects(arrow.put(batch, EMBEDDING, values, values.type), reasons)
