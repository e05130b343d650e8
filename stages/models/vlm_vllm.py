"""The in-process vLLM backend: one `LLM.generate` call per batch, prompts from the checkpoint's chat template.

Written against vLLM's documented offline multi-modal API (a prompt dict with `multi_modal_data`,
`limit_mm_per_prompt` on the engine); vLLM is an optional dependency (`pip install vllm`, Linux
with a CUDA GPU) and is imported only here, when the backend is chosen.
"""

from __future__ import annotations

import gc
from typing import Any

from dataprep.stages.models.vlm_backend import Generation
from dataprep.stages.models.vlm_prompt import VlmRequest, chat_messages
from dataprep.stages.models.vlm_transformers import frames_as_video, model_type


def load_vllm(path: str, *, dtype: str = "auto", max_images: int = 8, seed: int = 0, **options: Any) -> Any:
    """A `vllm.LLM` engine for the checkpoint at `path`, taking up to `max_images` images (or one video) a prompt."""
    try:
        from vllm import LLM
    except ImportError as exc:
        raise ImportError("backend vllm needs vLLM; fix: pip install vllm, or set backend: transformers") from exc
    options.setdefault("limit_mm_per_prompt", {"image": max_images, "video": 1})
    return LLM(model=path, dtype=dtype, seed=seed, **options)


class VllmBackend:
    """Captions a batch with one `LLM.generate` call; vLLM schedules the rows itself."""

    def __init__(self, engine: Any, *, path: str, video_input: str, sampling: dict[str, Any]) -> None:
        from transformers import AutoProcessor
        from vllm import SamplingParams

        self.engine = engine
        # The checkpoint's own chat template, as the transformers backend uses it.
        self.processor = AutoProcessor.from_pretrained(path)
        self.as_video = frames_as_video(video_input, model_type(path) or "")
        self.sampling = SamplingParams(**sampling)

    def generate(self, requests: list[VlmRequest]) -> list[Generation]:
        """Captions for `requests`, generated together."""
        if not requests:
            return []
        outputs = self.engine.generate([self._prompt(r) for r in requests], self.sampling, use_tqdm=False)
        results = []
        for out in outputs:
            completion = out.outputs[0] if out.outputs else None
            text = completion.text.strip() if completion is not None else ""
            results.append(Generation(
                text=text, prompt_tokens=len(out.prompt_token_ids or []),
                output_tokens=len(completion.token_ids) if completion is not None else 0,
                failure=None if text else "empty"))
        return results

    def close(self) -> None:
        """Drop the engine and return its GPU memory."""
        import torch

        del self.engine
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _prompt(self, request: VlmRequest) -> dict[str, Any]:
        """vLLM's prompt dict: the templated text and the pictures (a video as a (T, H, W, 3) uint8 array)."""
        import numpy as np

        video = self.as_video and request.video
        text = self.processor.apply_chat_template(chat_messages(request, as_video=video), tokenize=False,
                                                  add_generation_prompt=True)
        if video:
            size = request.images[0].size  # frames of one clip share a size; a video array needs one
            frames = np.stack([np.asarray(image.resize(size)) for image in request.images])
            return {"prompt": text, "multi_modal_data": {"video": frames}}
        return {"prompt": text, "multi_modal_data": {"image": request.images}}
