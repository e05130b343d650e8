"""The in-process transformers backend: AutoProcessor + AutoModelForImageTextToText, batched `generate`.

The family (the checkpoint's `model_type`) decides only whether a video's frames go in as one video
(Qwen2-VL, Qwen2.5-VL) or as several images (Idefics3 / SmolVLM and other families); prompts go
through the checkpoint's own chat template either way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataprep.stages.models.vlm_backend import Generation
from dataprep.stages.models.vlm_prompt import VlmRequest, chat_messages

# Families (model_type) given a video's frames as one video input; tested here with tiny models. Other
# families (Idefics3 / SmolVLM, ...) get them as several images, which every VLM's processor takes.
VIDEO_FAMILIES = frozenset({"qwen2_vl", "qwen2_5_vl"})


@dataclass
class LoadedVlm:
    """A VLM ready to generate: the model in eval mode, its processor and its family (`model_type`)."""

    model: Any
    processor: Any
    family: str



def frames_as_video(video_input: str, family: str) -> bool:
    """Whether a video's frames go in as one video: asked for, or `auto` and the family has a video input."""
    return video_input == "video" or (video_input == "auto" and family in VIDEO_FAMILIES)


def model_type(path: str) -> str | None:
    """The `model_type` in the checkpoint folder's config.json, or None when there is none."""
    config = Path(path) / "config.json"
    return json.loads(config.read_text()).get("model_type") if config.is_file() else None


def load_transformers(path: str, *, device: str = "auto", dtype: str = "auto") -> LoadedVlm:
    """Load the processor and model at `path` (a local folder or a hub name) onto `device`."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from dataprep.stages.models.load import pick_device, pick_dtype

    torch_device = pick_device(device)
    processor = AutoProcessor.from_pretrained(path)
    # Decoder-only generation appends after the prompt: padding must go on the left of a batch.
    processor.tokenizer.padding_side = "left"
    videos = getattr(processor, "video_processor", None)
    if videos is not None and hasattr(videos, "cap_pixels_per_frame") and videos.cap_pixels_per_frame is None:
        # Qwen's reference bound on a video's total pixels (qwen-vl-utils); transformers makes it the default soon.
        videos.cap_pixels_per_frame = True
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=pick_dtype(dtype, torch_device))
    return LoadedVlm(model=model.to(torch_device).eval(), processor=processor, family=model.config.model_type)


class TransformersBackend:
    """Captions a batch with one padded `generate` call."""

    def __init__(self, loaded: LoadedVlm, *, video_input: str, generate_kwargs: dict[str, Any],
                 seed: int | None) -> None:
        self.loaded = loaded
        self.as_video = frames_as_video(video_input, loaded.family)
        self.generate_kwargs = generate_kwargs
        self.seed = seed
        eos = loaded.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])

    def generate(self, requests: list[VlmRequest]) -> list[Generation]:
        """Captions for `requests`, generated together."""
        import torch

        if not requests:
            return []
        inputs = self._inputs(requests).to(self.loaded.model.device)
        if self.seed is not None:
            torch.manual_seed(self.seed)  # sampling: the same batch gives the same captions on a rerun
        with torch.inference_mode():
            out = self.loaded.model.generate(**inputs, **self.generate_kwargs)
        prompt_len = inputs["input_ids"].shape[1]
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        results = []
        for i, row in enumerate(out[:, prompt_len:].tolist()):  # (B, new tokens), right-padded after EOS
            n = next((k + 1 for k, t in enumerate(row) if t in self.eos), len(row))
            text = self.loaded.processor.tokenizer.decode(row[:n], skip_special_tokens=True).strip()
            results.append(Generation(text=text, prompt_tokens=int(prompt_tokens[i]), output_tokens=n,
                                      failure=None if text else "empty"))
        return results

    def close(self) -> None:
        """Drop the model and return its GPU memory."""
        import torch

        del self.loaded
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _inputs(self, requests: list[VlmRequest]) -> Any:
        """The padded batch: chat-templated prompts with their pictures (images per row, or videos)."""
        processor = self.loaded.processor
        texts, images, videos, metadata = [], [], [], []
        for r in requests:
            video = self.as_video and r.video
            texts.append(processor.apply_chat_template(chat_messages(r, as_video=video), tokenize=False,
                                                       add_generation_prompt=True))
            if video:
                videos.append(r.images)
                # Frames sampled evenly over the clip: their rate tells time-aware families (Qwen2.5-VL) the pace.
                fps = len(r.images) / r.seconds if r.seconds else None
                metadata.append({"fps": fps, "total_num_frames": len(r.images), "duration": r.seconds})
            else:
                images.append(r.images)
        extra: dict[str, Any] = {}
        if images:
            extra["images"] = images
        if videos:
            extra["videos"] = videos
            extra["video_metadata"] = metadata
        return processor(text=texts, padding=True, return_tensors="pt", **extra)
