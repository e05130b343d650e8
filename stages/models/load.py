"""Loading every model the same way: by a hub name or a local path, checked before any work starts.

A model stage's options name its models with `model_field(kind, ...)`. `load_model(kind, name)`
resolves the name (a local file or folder, else a hub name already in the local cache, else a hub
download by the family's own library) and calls the loader of that kind. `ModelStage.preflight`
finds every named model before the job starts, so an offline run with a missing checkpoint fails at
once with the model named; `ModelStage.tiny_params` swaps each for a tiny random model of the same
family (`dataprep run --tiny-models`), built by that kind's tiny builder and loaded by path through
the same `load_model`.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from dataprep.stage import Stage, StageParams

# Where the code that loads (and builds tiny versions of) each kind of model lives; imported on first use.
_KIND_MODULES = {
    "open_clip": "dataprep.stages.models.clip",
    "head": "dataprep.stages.models.heads",
    "vae": "dataprep.stages.models.vae",
    "t5": "dataprep.stages.models.text_encoders",
    "vlm": "dataprep.stages.models.vlm",
}
Loader = Callable[..., Any]
TinyBuilder = Callable[[str, Path], None]
_LOADERS: dict[str, Loader] = {}
_TINY_BUILDERS: dict[str, TinyBuilder] = {}
_MODEL_KIND = "model_kind"
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".onnx", ".gguf")
# Seconds to wait for the hub when a named model is not in the local cache.
_HUB_TIMEOUT_S = 10.0


class ModelNotFoundError(FileNotFoundError):
    """A model is neither a local path nor in the hub cache, and cannot be fetched."""


def loader(kind: str) -> Callable[[Loader], Loader]:
    """Register `fn(path_or_name, device=..., dtype=...)` as the loader of `kind`."""
    def register(fn: Loader) -> Loader:
        _LOADERS[kind] = fn
        return fn
    return register


def tiny_builder(kind: str) -> Callable[[TinyBuilder], TinyBuilder]:
    """Register `fn(name, dest)`: save a tiny random model of `name`'s family into folder `dest`."""
    def register(fn: TinyBuilder) -> TinyBuilder:
        _TINY_BUILDERS[kind] = fn
        return fn
    return register


def model_field(kind: str, default: str | None, description: str) -> Any:
    """A stage option naming a model of `kind` by hub name or local path."""
    return Field(default, description=description, json_schema_extra={_MODEL_KIND: kind})


def _kind_module(kind: str) -> None:
    if kind not in _KIND_MODULES:
        raise ValueError(f"unknown model kind {kind!r}; known: {sorted(_KIND_MODULES)}")
    importlib.import_module(_KIND_MODULES[kind])


def _is_path(name: str) -> bool:
    # A hub id is "owner/repo", and repo names may hold dots ("timm/vit_large_patch14_clip_224.openai",
    # "Qwen/Qwen2.5-VL-7B-Instruct"): "a/b.c" is a file only when .c is a weights suffix.
    if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
        return True
    suffix = Path(name).suffix
    return suffix in _WEIGHT_SUFFIXES or ("/" not in name and suffix != "")


def locate(name_or_path: str) -> str | None:
    """The local file or folder holding `name_or_path`: the path itself, or the hub snapshot in the cache."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return str(path)
    if _is_path(name_or_path):
        return None
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name_or_path, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means "not in the cache"
        return None


def missing_model(name_or_path: str, option: str) -> str | None:
    """Why `name_or_path` cannot be loaded here, with the fix; None when it can."""
    if locate(name_or_path) is not None:
        return None
    fix = f"fix: set `{option}` to a local path, or add --tiny-models to try the job with tiny random models"
    if _is_path(name_or_path):
        return f"`{option}`: model path {name_or_path!r} does not exist; {fix}"
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return f"`{option}`: model {name_or_path!r} is not in the local cache and HF_HUB_OFFLINE=1; {fix}"
    from huggingface_hub import model_info

    try:
        model_info(name_or_path, timeout=_HUB_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - unreachable hub, unknown repo, gated repo: all mean "cannot load"
        return (f"`{option}`: model {name_or_path!r} is not in the local cache and the hub cannot provide it "
                f"({type(exc).__name__}); {fix}")
    return None


def load_model(kind: str, name_or_path: str, **options: Any) -> Any:
    """Load the model of `kind` named `name_or_path` (hub name or local path) with the kind's loader."""
    _kind_module(kind)
    _quiet()
    return _LOADERS[kind](locate(name_or_path) or name_or_path, **options)


def build_tiny(kind: str, name: str, cache_dir: str | Path) -> str:
    """Path of a tiny random model of `name`'s family, built under `cache_dir` on first use."""
    _kind_module(kind)
    if kind not in _TINY_BUILDERS:
        raise ValueError(f"model kind {kind!r} has no tiny builder")
    digest = hashlib.sha1(f"{kind}:{name}".encode()).hexdigest()[:10]
    dest = Path(cache_dir) / f"{kind}-{Path(name).name}-{digest}"
    if not (dest / ".complete").exists():
        dest.mkdir(parents=True, exist_ok=True)
        _quiet()
        _TINY_BUILDERS[kind](name, dest)
        (dest / ".complete").touch()
    return str(dest)


def _quiet() -> None:
    """No "Loading weights" / "Writing model shards" bars in a job's log: one per actor, they bury its lines."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def model_options(params: StageParams) -> dict[str, str]:
    """The options of `params` that name a model, to their kind."""
    out = {}
    for option, info in type(params).model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get(_MODEL_KIND) and getattr(params, option):
            out[option] = str(extra[_MODEL_KIND])
    return out


def pick_device(device: str = "auto") -> Any:
    """The torch device a worker computes on: CUDA when it was given a GPU, else CPU."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def pick_dtype(dtype: str, device: Any) -> Any:
    """The torch dtype named `dtype`; "auto" is bfloat16 on a GPU that has it, float16 on others, float32 on CPU."""
    import torch

    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, dtype)


class ModelParams(StageParams):
    """Options every model stage has: where it computes and in which precision."""

    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Device; auto is CUDA when the worker has a GPU (resources: {gpus: ...}), else CPU.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Weights and activations; auto is bfloat16/float16 on a GPU, float32 on CPU.")


class ModelStage(Stage):
    """A stage whose options name models: checks them before work and can swap them for tiny ones."""

    # Model kernels can wedge or corrupt the worker's GPU context; those errors fail the job.
    fatal = ("torch.OutOfMemoryError", "torch.cuda.OutOfMemoryError", "torch.AcceleratorError")

    def preflight(self) -> list[str]:
        """Every named model that cannot be loaded here, with the fix."""
        problems = []
        for option in model_options(self.params):
            problem = missing_model(str(getattr(self.params, option)), option)
            if problem:
                problems.append(problem)
        return problems

    def tiny_params(self, cache_dir: str) -> StageParams:
        """These options with each named model replaced by a tiny random one of the same family."""
        swaps = {option: build_tiny(kind, str(getattr(self.params, option)), cache_dir)
                 for option, kind in model_options(self.params).items()}
        return self.params.model_copy(update=swaps)
