"""Text embeddings: each caption column encoded per token by T5 and/or CLIP's text tower, for a generator to read.

    stages:
      - stage: text_embed
        columns: [caption, caption_vlm]
        t5_model: Wan-AI/Wan2.1-T2V-1.3B-Diffusers   # its text_encoder/ (umt5-xxl) and tokenizer/
        max_tokens: 512
        resources: {gpus: 0.5}

Per caption column and encoder, three columns: the float16 token states (tokens, dim),
padded to a fixed length; the true token count, so the padding can be masked; and how many
tokens truncation cut. Column `caption` gives `t5_embedding`, `t5_tokens`, `t5_truncated`;
`caption_vlm` gives `t5_embedding_vlm`, `t5_tokens_vlm`, `t5_truncated_vlm`; likewise
`clip_text_embedding...`. Each embedding is the shard member `KEY.<column>.npy`, the name
`dataprep.loader` reads, and the counts go to `KEY.json` and the manifest.

T5 (T5EncoderModel, UMT5EncoderModel or MT5EncoderModel by the config's `model_type`) reads
`max_tokens` tokens with an attention mask over the real ones, and the states past them are
stored as zeros, as Wan's pipeline keeps them. CLIP (an open_clip model) reads its own context
length (77) and its states are the last block's output after the final layer norm at every
position, as the causal tower computes them. A row whose caption is null is rejected.
"""

from __future__ import annotations

import logging
import re
import string
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from dataprep import arrow, columns
from dataprep.stage import Resources, StageParams
from dataprep.stages.models.load import (ModelParams, ModelStage, load_model, loader, model_field, pick_device,
                                         pick_dtype, tiny_builder)
from dataprep.stages.models.vae import pipeline_subfolder, tensor_array

log = logging.getLogger(__name__)

_ENCODER_CLASSES = {"t5": "T5EncoderModel", "umt5": "UMT5EncoderModel", "mt5": "MT5EncoderModel"}
_COLUMN = re.compile(r"^[a-z0-9_]+$")
# Sentences the tiny tokenizer is trained on: caption-like words, so test captions become pieces, not <unk>.
_TINY_CORPUS = [
    "a red car drives down a wet street at night, neon lights reflecting",
    "two dogs play in the snow in a park; slow motion",
    "close-up of a woman reading a book by the window, soft light",
    "aerial view of a city skyline at sunset, 4k drone shot",
    "the camera pans across a green field with cows and a blue sky",
]


class TextEncoder(Protocol):
    """A loaded text encoder: per-token states of a batch of texts."""

    def encode(self, texts: list[str], max_tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(states float32 (B, L, D), real token counts (B,), tokens cut by truncation (B,))."""
        ...


class T5Encoder:
    """A T5-family encoder with its tokenizer."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer

    def encode(self, texts: list[str], max_tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """States of `texts` padded or truncated to `max_tokens` (B, max_tokens, D); zeros past each real count."""
        import torch

        full = np.array([len(ids) for ids in self.tokenizer(texts)["input_ids"]])  # with </s>, untruncated
        batch = self.tokenizer(texts, padding="max_length", max_length=max_tokens, truncation=True,
                               return_tensors="pt")
        param = next(self.model.parameters())
        mask = batch["attention_mask"].to(param.device)
        with torch.inference_mode():
            states = self.model(input_ids=batch["input_ids"].to(param.device), attention_mask=mask).last_hidden_state
            states = states * mask[..., None]  # (B, L, D); padding zeroed
        kept = batch["attention_mask"].sum(dim=1).numpy()
        return states.float().cpu().numpy(), kept, full - kept


class ClipTextEncoder:
    """The text tower of an open_clip model (as `load_model("open_clip", ...)` gives it)."""

    def __init__(self, clip: Any) -> None:
        self.clip = clip
        inner = getattr(clip.tokenizer, "tokenizer", None)  # an HF tokenizer inside open_clip's wrapper
        self.pad_id = getattr(inner, "pad_token_id", None) or 0  # open_clip's own BPE pads with 0

    @property
    def context_length(self) -> int:
        """Tokens the tower reads (77 for OpenAI's CLIP)."""
        return int(self.clip.tokenizer.context_length)

    def encode(self, texts: list[str], max_tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """States (B, context_length, D) of the last block after the final layer norm; `max_tokens` must be the
        context length, the only length the tower's positions take."""
        import torch

        tokens = self.clip.tokenizer(texts, context_length=max_tokens)  # (B, L), truncated with its end token kept
        # Untruncated: a byte-level BPE makes at most one token per byte.
        wide = self.clip.tokenizer(texts, context_length=max_tokens + max(len(t.encode("utf-8")) for t in texts))
        with torch.inference_mode():
            out = self.clip.model.forward_intermediates(text=tokens.to(self.clip.device), text_indices=1,
                                                        normalize_intermediates=True, intermediates_only=True)
        kept = (tokens != self.pad_id).sum(dim=1).numpy()
        full = (wide != self.pad_id).sum(dim=1).numpy()
        return out["text_intermediates"][-1].float().cpu().numpy(), kept, full - kept


@loader("t5")
def load_t5(path_or_name: str, *, device: str = "auto", dtype: str = "auto") -> T5Encoder:
    """A T5-family encoder and its tokenizer from one folder, or from a diffusers pipeline's text_encoder/ and
    tokenizer/, by local path or hub name."""
    import transformers

    model_folder = pipeline_subfolder(path_or_name, "text_encoder")
    tokenizer_folder = pipeline_subfolder(path_or_name, "tokenizer")
    config = transformers.AutoConfig.from_pretrained(path_or_name, subfolder=model_folder or "")
    if config.model_type not in _ENCODER_CLASSES:
        raise ValueError(f"model {path_or_name!r} is a {config.model_type!r} model, not a T5 encoder; fix: name "
                         f"one of the families {sorted(_ENCODER_CLASSES)}")
    torch_device = pick_device(device)
    model = getattr(transformers, _ENCODER_CLASSES[config.model_type]).from_pretrained(
        path_or_name, subfolder=model_folder or "", dtype=pick_dtype(dtype, torch_device))
    tokenizer = transformers.AutoTokenizer.from_pretrained(path_or_name, subfolder=tokenizer_folder or "")
    return T5Encoder(model.to(torch_device).eval(), tokenizer)


def _tiny_tokenizer() -> Any:
    """A T5-style unigram tokenizer (<pad> 0, </s> 1, <unk> 2; </s> appended) trained here on a few captions."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=256, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>",
        initial_alphabet=list(string.ascii_letters + string.digits + string.punctuation))
    tok.train_from_iterator(_TINY_CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return transformers.T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>", extra_ids=0)


@tiny_builder("t5")
def build_tiny_t5(name: str, dest: Path) -> None:
    """Save into `dest` a random two-layer encoder of `name`'s family (UMT5 for umt5 and Wan names, else T5 v1.1)
    with a tokenizer trained here: no download."""
    import torch
    import transformers

    tokenizer = _tiny_tokenizer()
    lowered = name.lower()
    umt5 = "umt5" in lowered or "wan" in lowered
    config_class = transformers.UMT5Config if umt5 else transformers.T5Config
    config = config_class(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                          feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same tiny model on every worker and every run
        model = (transformers.UMT5EncoderModel if umt5 else transformers.T5EncoderModel)(config)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


def output_columns(encoder: str, column: str) -> tuple[str, str, str]:
    """(embedding, token count, truncated count) columns of `encoder` ("t5", "clip_text") for caption `column`."""
    suffix = "" if column == columns.CAPTION else "_" + column.removeprefix(columns.CAPTION + "_")
    return f"{encoder}_embedding{suffix}", f"{encoder}_tokens{suffix}", f"{encoder}_truncated{suffix}"


class TextEmbedParams(ModelParams):
    """Options of `text_embed`; name at least one model."""

    columns: list[str] = Field(
        [columns.CAPTION], min_length=1, description="Caption columns to embed (names); e.g. [caption, caption_vlm] "
        "to train on both the original and the VLM's caption. Default: the original caption.")
    t5_model: str | None = model_field(
        "t5", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        "T5-family encoder (hub name or local path; a diffusers pipeline's text_encoder/ and tokenizer/ are used); "
        "null for none. Default: umt5-xxl as Wan2.1 ships it, encoder only in bf16 (11 GB). google/t5-v1_1-xxl "
        "for CogVideoX.")
    clip_model: str | None = model_field(
        "open_clip", None, "open_clip model whose text tower embeds too (hub name or local path); null for none. "
        "Default none: video generators condition on T5; SD-type image models on CLIP.")
    max_tokens: int = Field(
        512, ge=1, le=4096, description="T5 tokens per embedding (count): shorter captions are padded, longer ones "
        "truncated and counted in *_truncated. 512 is Wan2.1's text length (CogVideoX: 226); each token costs "
        "2*dim bytes (8 KiB for T5-XXL).")

    @field_validator("columns")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        bad = [c for c in value if not _COLUMN.match(c)]
        if bad:
            raise ValueError(f"`columns` must be lower-case column names (a-z, 0-9, _), got {bad}")
        suffixes = [output_columns("t5", c)[0] for c in value]
        if len(set(suffixes)) != len(suffixes):
            raise ValueError(f"`columns` {value} would write the same embedding column twice; list each once")
        return value

    @model_validator(mode="after")
    def _some_model(self) -> TextEmbedParams:
        if self.t5_model is None and self.clip_model is None:
            raise ValueError("name `t5_model` or `clip_model` (or both), got neither")
        return self


class TextEmbed(ModelStage):
    """Adds per-token text embeddings (float16) with their token counts, per caption column and encoder."""

    name = "text_embed"
    # What the default options read and write; an instance's follow its `columns` and models.
    reads = (columns.KEY, columns.CAPTION)
    writes = output_columns("t5", columns.CAPTION)
    Params = TextEmbedParams
    resources: ClassVar[Resources] = Resources(cpus=1.0)
    # Captions per forward pass: 64 x 512 tokens is ~1 GB of T5-XXL activations in bf16.
    batch_size = 64

    def __init__(self, params: StageParams | None = None, **options: Any) -> None:
        super().__init__(params, **options)
        p = self.params
        self.encoders = [e for e, m in (("t5", p.t5_model), ("clip_text", p.clip_model)) if m is not None]
        self.reads = (columns.KEY, *p.columns)
        self.writes = tuple(name for e in self.encoders for c in p.columns for name in output_columns(e, c))

    def setup(self) -> None:
        """Load the encoders once per worker, on its GPU when it has one."""
        import torch

        p = self.params
        if pick_device(p.device).type == "cpu":
            torch.set_num_threads(self.worker_threads())  # workers share the node's cores
        self.models: dict[str, TextEncoder] = {}
        if p.t5_model is not None:
            self.models["t5"] = load_model("t5", p.t5_model, device=p.device, dtype=p.dtype)
        if p.clip_model is not None:
            device = pick_device(p.device)
            self.models["clip_text"] = ClipTextEncoder(
                load_model("open_clip", p.clip_model, device=device, dtype=pick_dtype(p.dtype, device)))
        log.info("text_embed: %s for %s", ", ".join(self.models), ", ".join(p.columns))

    def teardown(self) -> None:
        """Free the encoders and their GPU memory."""
        import torch

        self.models.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _length(self, encoder: str) -> int:
        model = self.models[encoder]
        return model.context_length if isinstance(model, ClipTextEncoder) else self.params.max_tokens

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Embed every caption of the batch with one forward pass per column and encoder; null captions reject."""
        reasons: list[str | None] = [None] * batch.num_rows
        for column in self.params.columns:
            texts = arrow.column_or_none(batch, column)
            for i, text in enumerate(texts):
                if text is None:
                    reasons[i] = reasons[i] or f"text_embed:no_caption: column {column!r} is null"
            present = [i for i, text in enumerate(texts) if text is not None]
            for encoder in self.encoders:
                batch, bad = self._embed(batch, encoder, column, [texts[i] for i in present], present)
                for i in bad:
                    reasons[i] = reasons[i] or (f"text_embed:non_finite: {encoder} states of {column!r} overflow "
                                                "float16; fix: dtype bfloat16 or float32 (T5 overflows in float16)")
        return arrow.set_rejects(batch, reasons)

    def _embed(self, batch: pa.Table, encoder: str, column: str, texts: list[str],
               rows: list[int]) -> tuple[pa.Table, list[int]]:
        """`batch` with the three columns of `encoder` on `column` set on `rows` (null elsewhere), and the rows
        whose states float16 cannot hold."""
        n = batch.num_rows
        embeddings: list[np.ndarray | None] = [None] * n
        kept: list[int | None] = [None] * n
        cut: list[int | None] = [None] * n
        bad = []
        if texts:
            states, tokens, truncated = self.models[encoder].encode(texts, self._length(encoder))
            for j, i in enumerate(rows):
                embeddings[i], kept[i], cut[i] = states[j].astype(np.float16), int(tokens[j]), int(truncated[j])
                if not np.isfinite(embeddings[i]).all():
                    bad.append(i)
        names = output_columns(encoder, column)
        batch = arrow.put(batch, names[0], tensor_array(embeddings, 2), pa.list_(pa.list_(pa.float16())))
        batch = arrow.put(batch, names[1], kept, pa.int32())
        return arrow.put(batch, names[2], cut, pa.int32()), bad
