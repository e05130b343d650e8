"""Tiny random VLMs of a real model's family, built offline, for `--tiny-models` runs and tests.

`build_tiny_vlm("Qwen/Qwen2-VL-2B-Instruct", dest)` saves into `dest` a Qwen2-VL of a few hundred
kilobytes with a processor made here from its parts: a byte-level tokenizer (every text encodes,
no merges to download) with the family's special tokens, the family's image (and video) processor
at small sizes, and a chat template of the family's shape. `load_transformers(dest)` loads it like
any checkpoint. Its captions are random bytes: it exercises the pipeline, not the words.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dataprep.stages.models.vlm_transformers import model_type

# Hidden sizes of every tiny model (text and vision): small enough to build and run in a second on a CPU.
_HIDDEN = 32
_HEADS = 2

_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]
# Qwen2-VL's chat template (its system default included), without the vision ids option.
_QWEN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' %}"
    "<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_IDEFICS_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>",
                     "<global-img>", *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7))]
# SmolVLM's chat template: "User:<image>prompt<end_of_utterance>\nAssistant:".
_IDEFICS_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
# Lower-case name fragments of hub models -> family, for names that are not local checkpoints.
_NAME_FAMILIES = (("qwen2.5-vl", "qwen2_5_vl"), ("qwen2_5_vl", "qwen2_5_vl"), ("qwen2-vl", "qwen2_vl"),
                  ("qwen2_vl", "qwen2_vl"), ("smolvlm", "idefics3"), ("idefics3", "idefics3"))


def family_of(name: str) -> str:
    """The family (`model_type`) of a hub name or checkpoint folder; ValueError naming the supported ones."""
    found = model_type(name) if Path(name).is_dir() else None
    if found is None:
        lowered = name.lower()
        found = next((family for fragment, family in _NAME_FAMILIES if fragment in lowered), None)
    if found not in _BUILDERS:
        raise ValueError(f"no tiny VLM for {name!r} (family {found!r}); tiny families: {sorted(_BUILDERS)}; "
                         "fix: name a Qwen2-VL, Qwen2.5-VL or SmolVLM (Idefics3) model")
    return found


def build_tiny_vlm(name: str, dest: Path) -> None:
    """Save a tiny random model of `name`'s family, with its processor, into folder `dest`."""
    import torch

    torch.manual_seed(0)  # the same tiny model on every build
    model, processor = _BUILDERS[family_of(name)]()
    model.save_pretrained(dest)
    processor.save_pretrained(dest)


def _tokenizer(specials: list[str], *, eos: str, pad: str, bos: str | None = None) -> Any:
    """A byte-level tokenizer without merges: 256 byte tokens, then `specials` (ids 256, 257, ...)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=pad, bos_token=bos,
                                   padding_side="left")


def _text_config(tokenizer: Any, **extra: Any) -> dict[str, Any]:
    """A one-layer decoder over `tokenizer`'s vocabulary."""
    return dict(vocab_size=len(tokenizer), hidden_size=_HIDDEN, intermediate_size=2 * _HIDDEN, num_hidden_layers=1,
                num_attention_heads=_HEADS, num_key_value_heads=1, max_position_embeddings=4096,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id, **extra)


def _qwen_parts() -> tuple[Any, Any, dict[str, Any]]:
    """Tokenizer, processor parts and config fields shared by Qwen2-VL and Qwen2.5-VL."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tok = _tokenizer(_QWEN_SPECIALS, eos="<|im_end|>", pad="<|endoftext|>")
    ids = {s: tok.convert_tokens_to_ids(s) for s in _QWEN_SPECIALS}
    # 28 px patches merged 2x2: a 56x56 picture is 4 patches, 1 visual token; at most 4 tokens per picture.
    sizes = dict(min_pixels=28 * 28, max_pixels=56 * 56)
    parts = dict(image_processor=Qwen2VLImageProcessor(**sizes), tokenizer=tok,
                 video_processor=Qwen2VLVideoProcessor(**sizes), chat_template=_QWEN_TEMPLATE)
    # mrope splits each head's rotary half (head_dim 16 / 2 = 8) into time, height, width sections.
    text = _text_config(tok, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                              "mrope_section": [4, 2, 2]})
    fields = dict(text_config=text, image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    return tok, parts, fields


def _qwen2_vl() -> tuple[Any, Any]:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    tok, parts, fields = _qwen_parts()
    vision = dict(depth=1, embed_dim=_HIDDEN, hidden_size=_HIDDEN, num_heads=_HEADS, mlp_ratio=2)
    model = Qwen2VLForConditionalGeneration(Qwen2VLConfig(vision_config=vision, **fields))
    return _with_generation_ids(model, tok), Qwen2VLProcessor(**parts)


def _qwen2_5_vl() -> tuple[Any, Any]:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    tok, parts, fields = _qwen_parts()
    vision = dict(depth=1, hidden_size=_HIDDEN, intermediate_size=2 * _HIDDEN, num_heads=_HEADS,
                  out_hidden_size=_HIDDEN, fullatt_block_indexes=[0], window_size=56)
    model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(vision_config=vision, **fields))
    return _with_generation_ids(model, tok), Qwen2_5_VLProcessor(**parts)


def _idefics3() -> tuple[Any, Any]:
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor

    tok = _tokenizer(_IDEFICS_SPECIALS, eos="<end_of_utterance>", pad="<|endoftext|>", bos="<|im_start|>")
    # A 32 px picture is 4x4 patches of 8 px; the connector merges 2x2 of them: 4 visual tokens per picture.
    side, patch, scale = 32, 8, 2
    vision = dict(hidden_size=_HIDDEN, intermediate_size=2 * _HIDDEN, num_hidden_layers=1,
                  num_attention_heads=_HEADS, image_size=side, patch_size=patch)
    config = Idefics3Config(text_config=_text_config(tok, model_type="llama"), vision_config=vision,
                            image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=scale)
    images = Idefics3ImageProcessor(size={"longest_edge": side}, max_image_size={"longest_edge": side},
                                    do_image_splitting=False)
    processor = Idefics3Processor(image_processor=images, tokenizer=tok, chat_template=_IDEFICS_TEMPLATE,
                                  image_seq_len=(side // patch) ** 2 // scale**2)
    return _with_generation_ids(Idefics3ForConditionalGeneration(config), tok), processor


def _with_generation_ids(model: Any, tok: Any) -> Any:
    """`model` whose generation stops at the tokenizer's EOS and pads with its pad token."""
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    return model


_BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "qwen2_vl": _qwen2_vl, "qwen2_5_vl": _qwen2_5_vl, "idefics3": _idefics3,
}
