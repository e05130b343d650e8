"""VLM re-captioning with tiny random models of each family, built offline: batched generation, token counts,
the fallback to the original caption, the prompt template, image and multi-frame video inputs, preflight."""

from __future__ import annotations

import io

import pyarrow as pa
import pytest
from pydantic import ValidationError

from dataprep.stages.models.load import build_tiny
from dataprep.stages.models.vlm import VlmCaption
from dataprep.stages.models.vlm_backend import Generation, VlmConfigError
from dataprep.stages.models.vlm_prompt import build_request

QWEN2 = "Qwen/Qwen2-VL-2B-Instruct"
QWEN25 = "Qwen/Qwen2.5-VL-7B-Instruct"
SMOLVLM = "HuggingFaceTB/SmolVLM-256M-Instruct"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """name -> path of its tiny random model, built once per module."""
    cache = tmp_path_factory.mktemp("tiny-vlms")
    return lambda name: build_tiny("vlm", name, cache)


def _jpeg(shade: int, size=(64, 48)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (shade, 90, 40)).save(buf, format="JPEG")
    return buf.getvalue()


def _image(key="img", caption="a red square"):
    return {"key": key, "caption": caption, "media_type": "image", "frames": [_jpeg(200)]}


def _video(frames: int, key="vid", caption="a clip"):
    return {"key": key, "caption": caption, "media_type": "video", "duration": 4.0,
            "frames": [_jpeg(40 * i) for i in range(frames)]}


def _run(path: str, rows: list[dict], **options) -> list[dict]:
    stage = VlmCaption(model=path, **{"max_new_tokens": 4, **options})
    stage.setup()
    try:
        return stage.process_batch(pa.Table.from_pylist(rows)).to_pylist()
    finally:
        stage.teardown()


@pytest.mark.parametrize("name", [QWEN2, QWEN25, SMOLVLM])
def test_batched_generation_writes_the_caption_and_token_counts(tiny, name):
    stage = VlmCaption(model=tiny(name), max_new_tokens=4)
    stage.setup()
    calls = []
    model = stage.backend.loaded.model
    generate = model.generate
    model.generate = lambda **kw: calls.append(kw["input_ids"].shape[0]) or generate(**kw)
    rows = [_image(), _video(4), _image("img2", None)]
    out = stage.process_batch(pa.Table.from_pylist(rows)).to_pylist()
    stage.teardown()
    assert calls == [3]  # one generate call for the whole batch
    assert [r["caption_source"] for r in out] == ["vlm"] * 3
    assert all(r["caption_vlm"] and r["vlm_fallback_reason"] is None for r in out)
    assert [r["caption"] for r in out] == ["a red square", "a clip", None]  # the original is untouched
    assert all(1 <= r["vlm_output_tokens"] <= 4 and r["vlm_prompt_tokens"] > 10 for r in out)
    assert all(r["vlm_seconds"] > 0 for r in out)


@pytest.mark.parametrize("name", [QWEN2, SMOLVLM])
def test_every_frame_of_a_video_reaches_the_model(tiny, name):
    # Qwen2-VL takes the frames as one video (2 frames per temporal patch), SmolVLM as images: either way
    # more frames cost more prompt tokens than fewer, and a video more than its first frame alone.
    out = _run(tiny(name), [_video(4, "v4"), _video(8, "v8"), _video(1, "v1")])
    tokens = [r["vlm_prompt_tokens"] for r in out]
    assert tokens[1] > tokens[0] > tokens[2], tokens


def test_an_empty_generation_falls_back_to_the_original_caption(tiny):
    import json
    from pathlib import Path

    path = tiny(QWEN2)
    eos = json.loads((Path(path) / "generation_config.json").read_text())["eos_token_id"]
    # max_new_tokens=1 with EOS forced at the last step: the model emits EOS first, i.e. nothing.
    out = _run(path, [_image(), _image("no-caption", None)], max_new_tokens=1,
               generation={"forced_eos_token_id": eos})
    assert [r["caption_source"] for r in out] == ["fallback", "fallback"]
    assert [r["vlm_fallback_reason"] for r in out] == ["empty", "empty"]
    assert out[0]["caption_vlm"] == "a red square" and out[1]["caption_vlm"] is None
    assert [r["vlm_output_tokens"] for r in out] == [1, 1]  # the EOS it did generate is counted


def test_the_prompt_template_from_the_options_is_used(tiny):
    path = tiny(QWEN2)
    short = _run(path, [_image()], prompt="Caption.")[0]["vlm_prompt_tokens"]
    long_prompt = "Describe this {media}; its old caption was: {caption}."
    long = _run(path, [_image()], prompt=long_prompt, system_prompt="Be brief.")[0]["vlm_prompt_tokens"]
    rendered = "Describe this image; its old caption was: a red square."
    # The tiny tokenizer is byte-level: one token per byte. The system prompt replaces the template's default.
    default_system = "You are a helpful assistant."
    assert long - short == len(rendered) - len("Caption.") + len("Be brief.") - len(default_system)


def test_bad_rows_are_rejected_with_a_reason(tiny):
    rows = [_image(), {"key": "x", "caption": "c", "media_type": "video", "frames": [b"not a jpeg"]},
            {"key": "y", "caption": "c", "media_type": "image", "frames": None}]
    out = _run(tiny(QWEN2), rows)
    assert out[0]["_reject"] is None and out[0]["caption_source"] == "vlm"
    assert out[1]["_reject"].startswith("vlm:bad_frame: frames[0] is not a decodable image")
    assert out[2]["_reject"].startswith("vlm:no_frames:")


def test_preflight_names_a_missing_model_and_suggests_tiny_models(tmp_path):
    missing = str(tmp_path / "no-such-vlm")
    (problem,) = VlmCaption(model=missing).preflight()
    assert missing in problem and "--tiny-models" in problem and "`model`" in problem


def test_tiny_models_replace_the_model_with_one_of_its_family(tmp_path):
    from dataprep.stages.models.vlm_transformers import model_type

    for name, family in [(QWEN2, "qwen2_vl"), (SMOLVLM, "idefics3")]:
        params = VlmCaption(model=name).tiny_params(str(tmp_path))
        assert params.model != name and model_type(params.model) == family
    with pytest.raises(ValueError, match="no tiny VLM for 'acme/unknown-vlm'"):
        VlmCaption(model="acme/unknown-vlm").tiny_params(str(tmp_path))


class _Flaky:
    """A backend that fails any batch of more than one request, and every request whose prompt says "fail"."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.batches: list[int] = []

    def generate(self, requests):
        self.batches.append(len(requests))
        if len(requests) > 1 or requests[0].prompt == "fail":
            raise self.error
        return [Generation(text="ok", prompt_tokens=1, output_tokens=1)]

    def close(self):
        pass


def test_a_failing_batch_is_asked_again_row_by_row():
    stage = VlmCaption(prompt="{caption}")
    stage.backend = _Flaky(ValueError("boom"))
    out = stage.process_batch(pa.Table.from_pylist([_image(caption="fine"), _image(caption="fail")])).to_pylist()
    assert stage.backend.batches == [2, 1, 1]
    assert [r["caption_source"] for r in out] == ["vlm", "fallback"]
    assert out[1]["vlm_fallback_reason"] == "error:ValueError: boom" and out[1]["caption_vlm"] == "fail"


def test_a_config_error_is_not_retried_and_is_fatal():
    stage = VlmCaption()
    stage.backend = _Flaky(VlmConfigError("bad key"))
    with pytest.raises(VlmConfigError):
        stage.process_batch(pa.Table.from_pylist([_image(), _image()]))
    assert stage.backend.batches == [2] and stage.is_fatal(VlmConfigError("x"))


def test_options_are_checked():
    with pytest.raises(ValidationError, match="`prompt`: unknown field"):
        VlmCaption(prompt="Describe {thing}")
    with pytest.raises(ValidationError, match="`generation` sets \\['temperature'\\]"):
        VlmCaption(generation={"temperature": 0.7})
    assert VlmCaption(image_source="media").reads[-1] == "media"
    assert "media" not in VlmCaption().reads
    assert VlmCaption.members == {"caption_vlm": "vlm.txt"}


def test_requests_thin_frames_and_read_full_images_when_asked():
    row = _video(8) | {"caption": None}
    request = build_request(row, template="{media} {num_frames} {duration}", system=None, max_images=3,
                            max_side=32, use_media=False)
    assert len(request.images) == 3 and request.video and request.prompt == "video 3 4.0"
    assert max(request.images[0].size) == 32  # shrunk to max_side
    big = {"key": "i", "caption": "c", "media_type": "image", "frames": [_jpeg(1)], "media": _jpeg(2, (300, 200))}
    assert build_request(big, template="x", system=None, max_images=3, max_side=768, use_media=True
                         ).images[0].size == (300, 200)
    assert build_request(big, template="x", system=None, max_images=3, max_side=768, use_media=False
                         ).images[0].size == (64, 48)


def test_real_photos_reach_the_model_upright_in_rgb_and_bounded(shared_data, tiny):
    images = shared_data / "images"
    rows = [{"key": name.split(".")[0].replace("-", "_"), "caption": None, "media_type": "image", "frames": None,
             "media": (images / name).read_bytes()}
            for name in ("exif-orientation-examples_Landscape_6.jpg", "exif-orientation-examples_Portrait_3.jpg",
                         "skimage_camera.png")]
    landscape, portrait, gray = (build_request(r, template="x", system=None, max_images=1, max_side=768,
                                               use_media=True).images[0] for r in rows)
    # Landscape_6 is stored portrait with EXIF orientation 6: the model must see it as a landscape.
    assert landscape.size == (768, 512) and portrait.size == (512, 768)
    assert gray.mode == "RGB" and gray.size == (512, 512)
    out = _run(tiny(QWEN2), rows, image_source="media")
    assert [r["caption_source"] for r in out] == ["vlm"] * 3


@pytest.mark.slow
@pytest.mark.integration
def test_a_job_with_tiny_models_writes_vlm_captions_beside_the_originals(sample_dir, tmp_path):
    import json
    import os
    import subprocess
    import sys
    import textwrap

    import webdataset as wds

    config = tmp_path / "job.yaml"
    config.write_text(textwrap.dedent(f"""
        input: {sample_dir}
        output: {tmp_path / "out"}
        stages:
          - stage: ingest
          - stage: probe
          - stage: frame_sample
            num_frames: 4
          - stage: vlm_caption
            model: {QWEN2}
            max_new_tokens: 4
        sink: {{}}
    """))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "dataprep.cli", "run", str(config), "--tiny-models", "-q"], check=True,
                   cwd=tmp_path, env=env, timeout=600)
    out = tmp_path / "out"
    samples = list(wds.WebDataset([str(s) for s in sorted((out / "shards").glob("**/*.tar"))], shardshuffle=False))
    assert {json.loads(s["json"])["media_type"] for s in samples} == {"image", "video"}
    for sample in samples:
        meta = json.loads(sample["json"])
        assert meta["caption_source"] == "vlm" and meta["vlm_output_tokens"] >= 1
        assert sample["vlm.txt"].decode("utf-8") == meta["caption_vlm"] != meta["caption"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fields"]["caption_source"]["top"] == {"vlm": len(samples)}
    assert summary["rates"]["vlm_output_tokens_per_s"] > 0
