"""VLM re-captioning: a vision-language model writes a new caption per clip or image, beside the old one.

    stages:
      - stage: vlm_caption
        model: Qwen/Qwen2.5-VL-7B-Instruct
        backend: transformers        # transformers | vllm | http | auto (vllm when installed and on a GPU)
        prompt: "Describe this {media} in detail."
        max_new_tokens: 256
        resources: {gpus: 1}

A video is asked about through its `frame_sample` thumbnails (one video input for families that
take video, else several images), an image through its thumbnail or its `media` bytes. The new
caption goes to `caption_vlm` (the shard member KEY.vlm.txt); `caption` is left as it was. A
generation that fails or comes back empty keeps the original caption in `caption_vlm` and says so:
`caption_source` is "fallback" and `vlm_fallback_reason` says why, so the summary counts them.
Token counts (`vlm_prompt_tokens`, `vlm_output_tokens`) and each row's share of its batch's
generation time (`vlm_seconds`) give the run's tokens per second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from dataprep import columns
from dataprep.errors import row_error
from dataprep.stage import Resources, StageParams
from dataprep.stages.models.load import (
    ModelParams,
    ModelStage,
    load_model,
    loader,
    locate,
    model_field,
    tiny_builder,
)
from dataprep.stages.models.vlm_backend import Backend, Generation, VlmConfigError
from dataprep.stages.models.vlm_prompt import VlmRequest, build_request, template_problem

log = logging.getLogger(__name__)

FIELDS = pa.schema([
    ("caption_vlm", pa.string()),
    ("caption_source", pa.string()),
    ("vlm_fallback_reason", pa.string()),
    ("vlm_prompt_tokens", pa.int64()),
    ("vlm_output_tokens", pa.int64()),
    ("vlm_seconds", pa.float64()),
])
DEFAULT_PROMPT = (
    "Describe this {media} as a caption for training a text-to-{media} model: the main subjects and what they do, "
    "the setting, the style and lighting, and for a video the camera movement. One paragraph of plain prose, "
    "no lists, no preamble."
)
# Options the typed fields own; `generation` must not set them a second way.
_TYPED_GENERATION = ("max_new_tokens", "max_tokens", "temperature", "top_p", "do_sample", "seed")


class VlmParams(ModelParams):
    """Options of `vlm_caption`."""

    model: str = model_field(
        "vlm", "Qwen/Qwen2.5-VL-7B-Instruct",
        "VLM by hub name or local path (for `http`: the name the server serves). The family comes from its "
        "config's model_type (Qwen2-VL, Qwen2.5-VL, SmolVLM/Idefics3, ...). Qwen2.5-VL-7B fits one 24 GB GPU in "
        "bfloat16 (about 16 GB of weights); 3B is cheaper and vaguer, 72B needs several GPUs.")
    backend: Literal["auto", "transformers", "vllm", "http"] = Field(
        "transformers", description="Who generates: transformers in-process (works everywhere), vllm in-process "
        "(continuous batching: more captions per GPU-hour), http (an OpenAI-compatible server: vLLM, SGLang), or auto "
        "(vllm when it is installed and the worker has a GPU, else transformers).")
    prompt: str = Field(
        DEFAULT_PROMPT, description="Prompt template (str.format) over {media}, {caption}, {num_frames}, "
        "{duration}; the default asks for the dense, preamble-free prose text-to-video training wants.")
    system_prompt: str | None = Field(None, description="System message; None keeps the model's own default.")
    max_new_tokens: int = Field(
        256, ge=1, le=8192, description="Most tokens generated per caption (count); a dense paragraph is 100-200 "
        "tokens, so 256 rarely cuts one short and bounds a rambling one.")
    temperature: float = Field(
        0.0, ge=0, le=2, description="Sampling temperature; 0 is greedy decoding, so a rerun writes the same "
        "captions.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (0-1) when temperature > 0; 1 keeps "
                         "every token.")
    seed: int = Field(0, ge=0, description="Sampling seed when temperature > 0, so a rerun samples the same.")
    generation: dict[str, Any] = Field(
        default_factory=dict, description="Further generation options passed as they are: to transformers' "
        "generate (repetition_penalty, bad_words_ids, ...), vLLM's SamplingParams, or the HTTP request body.")
    max_images: int = Field(
        8, ge=1, le=64, description="Pictures per row at most (count); more frames are thinned evenly. 8 256-px "
        "frames cost Qwen2-VL about 650 visual tokens as images (330 as a video), a fraction of its context.")
    max_side: int = Field(
        768, ge=28, le=4096, description="Longer side of a picture given to the model (px), larger ones shrunk; "
        "visual tokens grow with area, and 768 px keeps an image's detail in at most ~730 Qwen2-VL tokens.")
    video_input: Literal["auto", "video", "images"] = Field(
        "auto", description="A video's frames as one video input or as several images; auto: video for families "
        "with a video input (Qwen2-VL, Qwen2.5-VL), images otherwise and over HTTP (OpenAI messages carry images).")
    image_source: Literal["frames", "media"] = Field(
        "frames", description="What an image is captioned from: its `frames` thumbnail, or its full `media` bytes "
        "(written by image_standardize) for detail the 256 px thumbnail loses.")
    endpoint: str = Field(
        "http://127.0.0.1:8000/v1", description="Base URL of the OpenAI-compatible server for `backend: http`; "
        "`vllm serve` listens on port 8000 by default.")
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="Environment variable holding the server's API key (sent as a Bearer token "
        "when set); the key itself never goes in a config.")
    max_in_flight: int = Field(
        8, ge=1, le=256, description="Requests in flight per worker for `backend: http` (count; the server sees "
        "this times the workers, set by the entry's `concurrency`); 8 keeps a server's batch full without "
        "queueing requests past their timeout.")
    timeout_s: float = Field(
        120.0, gt=0, description="Per-request timeout for `backend: http` (s): the longest the server may stay "
        "silent; a 256-token caption takes seconds, minutes mean it is stuck.")
    max_retries: int = Field(
        4, ge=0, le=20, description="Retries of a request that got 429, 5xx, a timeout or a broken connection "
        "(count); 4 waits at most 1 + 2 + 4 + 8 s, riding out a short overload or a server restart.")
    backoff_s: float = Field(
        1.0, ge=0, description="First retry's wait (s), doubled per retry with jitter, at most 30 s.")
    vllm_options: dict[str, Any] = Field(
        default_factory=dict, description="Options for vLLM's engine (vllm.LLM), e.g. {max_model_len: 16384, "
        "gpu_memory_utilization: 0.85}; vLLM's defaults otherwise.")

    @model_validator(mode="after")
    def _valid(self) -> VlmParams:
        problem = template_problem(self.prompt)
        if problem:
            raise ValueError(f"`prompt`: {problem}")
        clash = sorted(set(self.generation) & set(_TYPED_GENERATION))
        if clash:
            raise ValueError(f"`generation` sets {clash}; fix: use the stage's own options (max_new_tokens, "
                             "temperature, top_p, seed) instead")
        return self


class VlmCaption(ModelStage):
    """Adds `caption_vlm` (a VLM's caption, or the original on failure) with its source, tokens and time."""

    name = "vlm_caption"
    reads = (columns.CAPTION, "media_type", "frames")  # and `media` when image_source is "media"
    writes = tuple(FIELDS.names)
    members: ClassVar[dict[str, str]] = {"caption_vlm": "vlm.txt"}
    # Per worker: output tokens over the seconds its generate calls took.
    rates: ClassVar[dict[str, tuple[str, str]]] = {"vlm_output_tokens_per_s": ("vlm_output_tokens", "vlm_seconds"),
                                                   "vlm_prompt_tokens_per_s": ("vlm_prompt_tokens", "vlm_seconds")}
    Params = VlmParams
    resources: ClassVar[Resources] = Resources(cpus=1.0)
    # Rows per generate call; a GPU runs 16 short prompts in about the time of one.
    batch_size = 16
    # A wrong API key or model name would fail every row: stop the job and say so.
    fatal = (*ModelStage.fatal, VlmConfigError)

    def __init__(self, params: StageParams | None = None, **options: Any) -> None:
        super().__init__(params, **options)
        p: VlmParams = self.params  # type: ignore[assignment]
        if p.image_source == "media":
            self.reads = (*type(self).reads, columns.MEDIA)
        self.backend: Backend | None = None

    def setup(self) -> None:
        """Load the model (or open the connection pool) the backend needs."""
        self.backend = open_backend(self.params)  # type: ignore[arg-type]

    def teardown(self) -> None:
        """Release the model or the connection pool."""
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def preflight(self) -> list[str]:
        """A missing model (local backends), or an unreachable server or unserved model (http)."""
        p: VlmParams = self.params  # type: ignore[assignment]
        if p.backend == "http":
            from dataprep.stages.models.vlm_http import endpoint_problem

            problem = endpoint_problem(p.endpoint, p.model, api_key=os.environ.get(p.api_key_env))
            return [problem] if problem else []
        problems = super().preflight()
        if p.backend == "vllm" and importlib.util.find_spec("vllm") is None:
            problems.append("`backend`: vllm is not installed; fix: pip install vllm, or set backend: transformers")
        return problems

    def tiny_params(self, cache_dir: str) -> StageParams:
        """A tiny model for local backends; `http` keeps its server, which is not ours to swap."""
        if self.params.backend == "http":  # type: ignore[attr-defined]
            return self.params
        return super().tiny_params(cache_dir)

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Caption every row; a row without usable pictures is rejected, a failed caption falls back."""
        rows = batch.to_pylist()
        results: list[Any] = [self._guard(self._request, row) for row in rows]  # a request, or why it is rejected
        live = [i for i, r in enumerate(results) if isinstance(r, VlmRequest)]
        start = time.monotonic()
        generations = self._generate([results[i] for i in live])
        share = (time.monotonic() - start) / max(1, len(live))
        for i, generation in zip(live, generations, strict=True):
            results[i] = _fields(rows[i].get(columns.CAPTION), generation, share)
        fallbacks = sum(1 for i in live if results[i]["caption_source"] == "fallback")
        if fallbacks:
            log.info("vlm_caption: %d of %d rows kept their original caption", fallbacks, len(live))
        return self._assemble(batch, results, FIELDS)

    def _request(self, row: dict[str, Any]) -> VlmRequest:
        p: VlmParams = self.params  # type: ignore[assignment]
        return build_request(row, template=p.prompt, system=p.system_prompt, max_images=p.max_images,
                             max_side=p.max_side, use_media=p.image_source == "media")

    def _generate(self, requests: list[VlmRequest]) -> list[Generation]:
        """The backend's answers; a batch that raises is asked again one request at a time."""
        if self.backend is None:
            raise RuntimeError("vlm_caption: setup() was not called before process_batch()")
        try:
            return self.backend.generate(requests)
        except Exception as exc:
            if self.is_fatal(exc):
                raise
            if len(requests) <= 1:
                return [Generation(text=None, failure=row_error(exc))] * len(requests)
            log.warning("vlm_caption: a batch of %d failed (%s); asking one row at a time", len(requests), exc)
        return [g for r in requests for g in self._generate([r])]


def _fields(original: str | None, generation: Generation, seconds: float) -> dict[str, Any]:
    """The columns of one captioned row: the new caption, or the original one flagged as a fallback."""
    text = (generation.text or "").strip()
    return {
        "caption_vlm": text or original,
        "caption_source": "vlm" if text else "fallback",
        "vlm_fallback_reason": None if text else (generation.failure or "empty"),
        "vlm_prompt_tokens": generation.prompt_tokens,
        "vlm_output_tokens": generation.output_tokens,
        "vlm_seconds": seconds,
    }


def resolve_backend(p: VlmParams) -> str:
    """The backend `auto` stands for here: vllm when it is installed and this worker computes on a GPU."""
    if p.backend != "auto":
        return p.backend
    if p.device != "cpu" and importlib.util.find_spec("vllm") is not None:
        import torch

        if torch.cuda.is_available():
            return "vllm"
    return "transformers"


def open_backend(p: VlmParams) -> Backend:
    """The backend `p` names, ready to generate."""
    kind = resolve_backend(p)
    if kind == "http":
        from dataprep.stages.models.vlm_http import HttpBackend

        body = {"max_tokens": p.max_new_tokens, "temperature": p.temperature, "top_p": p.top_p, "seed": p.seed,
                **p.generation}
        return HttpBackend(endpoint=p.endpoint, model=p.model, api_key=os.environ.get(p.api_key_env), body=body,
                           max_in_flight=p.max_in_flight, timeout_s=p.timeout_s, max_retries=p.max_retries,
                           backoff_s=p.backoff_s)
    if kind == "vllm":
        from dataprep.stages.models.vlm_vllm import VllmBackend

        engine = load_model("vlm", p.model, engine="vllm", dtype=p.dtype, max_images=p.max_images, seed=p.seed,
                            **p.vllm_options)
        return VllmBackend(engine, path=locate(p.model) or p.model, video_input=p.video_input, sampling={
            "max_tokens": p.max_new_tokens, "temperature": p.temperature, "top_p": p.top_p, "seed": p.seed,
            **p.generation})
    from dataprep.stages.models.vlm_transformers import TransformersBackend

    sampling = {"temperature": p.temperature, "top_p": p.top_p} if p.temperature > 0 else {}
    return TransformersBackend(
        load_model("vlm", p.model, device=p.device, dtype=p.dtype), video_input=p.video_input,
        generate_kwargs={"max_new_tokens": p.max_new_tokens, "do_sample": p.temperature > 0, **sampling,
                         **p.generation},
        seed=p.seed if p.temperature > 0 else None)


@loader("vlm")
def load_vlm(path: str, *, device: str = "auto", dtype: str = "auto", engine: str = "transformers",
             **engine_options: Any) -> Any:
    """The VLM at `path`: a `LoadedVlm` (transformers), or a `vllm.LLM` when `engine` is "vllm"."""
    if engine == "vllm":
        from dataprep.stages.models.vlm_vllm import load_vllm

        return load_vllm(path, dtype=dtype, **engine_options)
    from dataprep.stages.models.vlm_transformers import load_transformers

    return load_transformers(path, device=device, dtype=dtype)


@tiny_builder("vlm")
def build_tiny_vlm(name: str, dest: Path) -> None:
    """Save a tiny random VLM of `name`'s family (Qwen2-VL, Qwen2.5-VL, SmolVLM/Idefics3) into `dest`."""
    from dataprep.stages.models import vlm_tiny

    vlm_tiny.build_tiny_vlm(name, dest)
