"""Small heads on the CLIP embedding: the LAION aesthetic score and a watermark probability.

    stages:
      - stage: clip_embed
        model: timm/vit_large_patch14_clip_224.openai
      - stage: aesthetic_filter
        head: ~/.cache/dataprep/sac+logos+ava1-l14-linearMSE.pth
        min_score: 4.5

A head file (kind "head") is a torch state dict (`.pth`/`.pt`/`.bin`, or `.safetensors`; a
`{"state_dict": ...}` wrapper is unwrapped), or a folder holding exactly one such file. Its 2-d
`*weight` tensors are Linear layers applied in the order of the numbers in their names, each with
its `*bias`. LAION's improved-aesthetic-predictor (`layers.0`, `.2`, `.4`, `.6`, `.7`:
Linear(768, 1024), Dropout, Linear(1024, 128), Dropout, Linear(128, 64), Dropout, Linear(64, 16),
Linear(16, 1)) has no nonlinearity between its layers, and its Dropouts are identity at
inference; a one-layer probe (`weight`, `bias`) is LAION's first aesthetic predictor. The input
width is read from the first layer, so a head trained on ViT-B/32's 512-d embeddings loads too.
Both read `clip_embedding`, which is unit length as these heads expect.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from dataprep import arrow
from dataprep.stage import Filter, StageParams
from dataprep.stages.models.clip import EMBEDDING, TINY_EMBED_DIM, EmbeddingMismatchError, check_width, \
    embedding_matrix, missing_embedding
from dataprep.stages.models.load import ModelStage, load_model, loader, model_field, tiny_builder

if TYPE_CHECKING:
    import numpy as np

_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_TINY_FILE = "head.safetensors"
# LAION's improved-aesthetic-predictor layout; the tiny head keeps its indices with narrower layers.
_LAION_INDICES = (0, 2, 4, 6, 7)
Activation = Literal["none", "relu"]


class HeadFormatError(ValueError):
    """A head file is not a chain of Linear layers this module can run."""


class Head:
    """Linear layers (weights (out, in), biases (out,)) with `activation` between them, run with numpy."""

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]], activation: Activation, source: str) -> None:
        self.layers = layers
        self.activation = activation
        self.source = source
        self.in_dim = int(layers[0][0].shape[1])
        self.out_dim = int(layers[-1][0].shape[0])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Outputs (N, out_dim) for embeddings (N, in_dim)."""
        import numpy as np

        for n, (weight, bias) in enumerate(self.layers):
            x = x @ weight.T + bias
            if n < len(self.layers) - 1 and self.activation == "relu":
                x = np.maximum(x, 0.0)
        return x


def _weights_file(path: Path) -> Path:
    if not path.is_dir():
        return path
    found = sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES)
    if len(found) != 1:
        raise HeadFormatError(f"head folder {str(path)!r} holds {len(found)} weight files "
                              f"({[p.name for p in found]}); fix: name the file itself")
    return found[0]


def _state_dict(path: Path) -> dict[str, Any]:
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(str(path))
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise HeadFormatError(f"head {str(path)!r} is a {type(state).__name__}, not a state dict")
    return {k: v.float().numpy() for k, v in state.items() if isinstance(v, torch.Tensor)}


def _order(key: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", key))


@loader("head")
def load_head(path_or_name: str, *, activation: Activation = "none") -> Head:
    """The head stored at `path_or_name` (a file, or a folder with one weights file)."""
    import numpy as np

    path = _weights_file(Path(path_or_name).expanduser())
    state = _state_dict(path)
    weights = sorted((k for k in state if k.endswith("weight")), key=_order)
    if not weights:
        raise HeadFormatError(f"head {str(path)!r} has no `weight` tensors; expected Linear layers")
    layers = []
    for key in weights:
        weight = np.asarray(state[key], np.float32)
        if weight.ndim != 2:
            raise HeadFormatError(f"head {str(path)!r}: {key} has shape {weight.shape}; only Linear layers are "
                                  "supported (no norms or convolutions)")
        bias = state.get(key[: -len("weight")] + "bias")
        bias = np.zeros(weight.shape[0], np.float32) if bias is None else np.asarray(bias, np.float32)
        if layers and layers[-1][0].shape[0] != weight.shape[1]:
            raise HeadFormatError(f"head {str(path)!r}: {key} takes {weight.shape[1]} inputs but the layer before "
                                  f"gives {layers[-1][0].shape[0]}; the layers do not chain")
        layers.append((weight, bias))
    return Head(layers, activation, str(path))


@tiny_builder("head")
def build_tiny_head(name: str, dest: Path) -> None:
    """Save a random head in LAION's aesthetic layout, narrowed, reading TINY_EMBED_DIM-d embeddings."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    widths = (TINY_EMBED_DIM, 16, 8, 8, 4, 1)
    state = {}
    for n, index in enumerate(_LAION_INDICES):
        fan_in = widths[n]
        state[f"layers.{index}.weight"] = rng.uniform(-1, 1, (widths[n + 1], fan_in)).astype(np.float32) / fan_in**0.5
        state[f"layers.{index}.bias"] = np.zeros(widths[n + 1], np.float32)
    save_file(state, str(dest / _TINY_FILE))


class _HeadFilter(ModelStage, Filter):
    """A filter scoring `clip_embedding` with the head named by its `head` option."""

    reads = (EMBEDDING,)
    fatal: ClassVar[tuple[Any, ...]] = (*ModelStage.fatal, EmbeddingMismatchError)
    # A head is a few small matmuls: LAION's on 4096 ViT-L/14 embeddings takes ~80 ms of one CPU core
    # (benchmarks/bench_models.py) and 12 MB of input, so the batch costs little memory and the runner's
    # milliseconds per batch are a small part of it; a block's 1,000 rows would make them a large one.
    batch_size = 4096
    # The option holding the threshold, cleared in tiny runs.
    threshold: ClassVar[str]
    # Output widths the filter can read: 1 (a score or a logit), 2 (two-class logits).
    outputs: ClassVar[tuple[int, ...]] = (1,)

    def preflight(self) -> list[str]:
        """A missing head, or one this filter cannot run, found before any work."""
        problems = super().preflight()
        if problems:
            return problems
        try:
            self._load()
        except Exception as exc:  # noqa: BLE001 - a head that cannot be read here cannot be read on a worker
            return [f"`head`: {type(exc).__name__}: {exc}"]
        return []

    def tiny_params(self, cache_dir: str) -> StageParams:
        """Tiny random head, and no threshold: a random head's scores are noise, so a tiny run records them
        and drops nothing, and the stages after it still get rows."""
        return super().tiny_params(cache_dir).model_copy(update={self.threshold: None})

    def setup(self) -> None:
        """Load the head once per worker."""
        self.head = self._load()

    def _load(self) -> Head:
        head = load_model("head", str(self.params.head), activation=self._activation())
        if head.out_dim not in self.outputs:
            raise HeadFormatError(f"head {head.source!r} gives {head.out_dim} outputs; {self.name} takes a head "
                                  f"with {' or '.join(map(str, self.outputs))}")
        return head

    def _activation(self) -> Activation:
        return "none"

    def _outputs(self, batch: pa.Table) -> tuple[np.ndarray, list[bool]]:
        import numpy as np

        outputs, present = [], []
        # Chunk by chunk: a batch made of several blocks is several chunks, and joining them would copy every embedding.
        for chunk in batch.column(EMBEDDING).chunks:
            x, has = embedding_matrix(pa.table({EMBEDDING: chunk}))
            present += has
            if any(has):
                check_width(x.shape[1], self.head.in_dim, f"{self.name}'s head {self.head.source!r}", "give "
                            "clip_embed the CLIP model the head was trained on, or use a head trained on its model")
                outputs.append(self.head(x))
            else:
                outputs.append(np.zeros((len(has), self.head.out_dim), np.float32))
        if not outputs:
            return np.zeros((0, self.head.out_dim), np.float32), present
        return np.concatenate(outputs), present


def _scores(values: np.ndarray, present: list[bool]) -> pa.Array:
    """A float32 score per row, null where the row had no embedding."""
    import numpy as np

    mask = None if all(present) else ~np.asarray(present, bool)
    return pa.array(np.asarray(values, np.float32), pa.float32(), mask=mask)


class AestheticParams(StageParams):
    """Options of `aesthetic_filter`."""

    head: str = model_field(
        "head", "~/.cache/dataprep/sac+logos+ava1-l14-linearMSE.pth",
        "Aesthetic head in LAION's improved-aesthetic-predictor layout (path or hub repo). Default: where to put "
        "its SAC+LOGOS+AVA model for OpenAI ViT-L/14 embeddings (sac+logos+ava1-l14-linearMSE.pth, from the "
        "improved-aesthetic-predictor repository).")
    min_score: float | None = Field(
        4.5, description="Keep rows scoring at least this (LAION's 1-10 scale); 4.5 is the loosest LAION-Aesthetics "
        "V2 subset (1.2B of laion2B-en), 5.0 what Stable Diffusion 1.x fine-tuned on. None: score only.")


class AestheticFilter(_HeadFilter):
    """Adds `aesthetic_score` from LAION's aesthetic head; drops rows below `min_score`."""

    name = "aesthetic_filter"
    writes = ("aesthetic_score",)
    Params = AestheticParams
    threshold = "min_score"

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Score every row in one pass of the head."""
        scores, present = self._outputs(batch)
        return arrow.put(batch, "aesthetic_score", _scores(scores[:, 0], present), pa.float32())

    def reasons(self, batch: pa.Table) -> list[str | None]:
        """Below `min_score` drops a row."""
        low = self.params.min_score
        return [missing_embedding("aesthetic") if s is None else
                f"aesthetic:low_score: {s:.2f} < {low}" if low is not None and s < low else None
                for s in batch.column("aesthetic_score").to_pylist()]


class WatermarkParams(StageParams):
    """Options of `watermark_filter`."""

    head: str = model_field(
        "head", ...,
        "Watermark head on CLIP embeddings (path or hub repo): Linear layers ending in 1 logit (sigmoid) or 2 "
        "(softmax). LAION-5B's own detector is an EfficientNet on pixels, not a CLIP head, and does not load here.")
    max_prob: float | None = Field(
        0.8, ge=0, le=1, description="Drop rows whose watermark probability is above this (0-1). LAION's example "
        "used 0.5 (Stable Diffusion 1.x kept < 0.5); HEIM used 0.8 as detectors take scene text for "
        "watermarks, so 0.8 drops confident ones only. None: score only.")
    activation: Activation = Field(
        "relu", description="Nonlinearity between the head's Linear layers; relu as in LAION's watermark classifier "
        "head. Ignored for a one-layer probe.")
    watermark_class: int = Field(
        0, ge=0, le=1, description="For a 2-logit head: index of the watermark class; 0 as in LAION's detector "
        "(softmax gives [watermark, clear]).")


class WatermarkFilter(_HeadFilter):
    """Adds `watermark_prob` from a CLIP-embedding head; drops rows above `max_prob`."""

    name = "watermark_filter"
    writes = ("watermark_prob",)
    Params = WatermarkParams
    threshold = "max_prob"
    outputs = (1, 2)

    def _activation(self) -> Activation:
        return self.params.activation

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Probability per row in one pass of the head."""
        import numpy as np

        logits, present = self._outputs(batch)
        if logits.shape[1] == 1:
            probs = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        else:
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs = shifted[:, self.params.watermark_class] / shifted.sum(axis=1)
        return arrow.put(batch, "watermark_prob", _scores(probs, present), pa.float32())

    def reasons(self, batch: pa.Table) -> list[str | None]:
        """Above `max_prob` drops a row."""
        high = self.params.max_prob
        return [missing_embedding("watermark") if p is None else
                f"watermark:likely: probability {p:.2f} > {high}" if high is not None and p > high else None
                for p in batch.column("watermark_prob").to_pylist()]
