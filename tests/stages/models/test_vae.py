"""vae_latents: float16 latents of the VAE's compression, scaled as the family's pipeline scales them, by the
documented frame-count and size rules, computed with tiny random VAEs that load like real checkpoints."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from dataprep.ffmpeg import ffmpeg_exe
from dataprep.members import SampleLayout, declared_members, to_ndarray
from dataprep.stages.models.load import build_tiny
from dataprep.stages.models.vae import VaeLatents, _tiny_class
from dataprep.stages.models.vae_frames import aligned_crop, decode_clip, valid_frames

# Real checkpoint names: the tiny builder picks each one's family from the name.
REAL = {"wan": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "cogvideox": "THUDM/CogVideoX-2b",
        "hunyuan": "hunyuanvideo-community/HunyuanVideo", "sdxl": "stabilityai/sdxl-vae",
        "flux": "black-forest-labs/FLUX.1-dev"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_vae")
    return lambda family: build_tiny("vae", REAL[family], folder)


@pytest.fixture(scope="module")
def stage(tiny):
    made: dict[tuple, VaeLatents] = {}

    def make(family: str, **options) -> VaeLatents:
        key = (family, *sorted(options.items()))
        if key not in made:
            made[key] = VaeLatents(model=tiny(family), device="cpu", **options)
            made[key].setup()
        return made[key]
    return make


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """mp4 bytes of `frames` frames of a moving test pattern, `size` WxH, as standardize writes clips."""
    folder = tmp_path_factory.mktemp("vae_clips")

    def make(frames: int, size: str = "48x32", pattern: str = "testsrc2") -> bytes:
        path = folder / f"{pattern}_{frames}_{size}.mp4"
        if not path.exists():
            subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                            f"{pattern}=s={size}:r=24", "-frames:v", str(frames), "-c:v", "libx264", "-preset",
                            "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True, timeout=60)
        return path.read_bytes()
    return make


def video(key: str, media: bytes | None) -> dict:
    return {"key": key, "source": f"/src/{key}.mp4", "media_type": "video", "media": media}


def image_png(width: int, height: int, seed: int = 0) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def run(stage: VaeLatents, rows: list[dict]) -> pa.Table:
    return stage.process_batch(pa.Table.from_pylist(rows))


def latent(table: pa.Table, i: int) -> np.ndarray:
    return to_ndarray(table.column("latent").combine_chunks(), i)


def pixels(clip_bytes: bytes, frames: int) -> torch.Tensor:
    """The clip's first `frames` frames as a video VAE reads them: (1, 3, T, H, W) in [-1, 1]."""
    x = torch.from_numpy(decode_clip(clip_bytes)[:frames]).float() / 127.5 - 1.0  # (T, H, W, 3)
    return x.permute(3, 0, 1, 2)[None]


@pytest.mark.parametrize(("family", "frames"), [("wan", 17), ("cogvideox", 9), ("hunyuan", 9)])
def test_video_latent_is_the_vaes_compression_of_the_clip_and_decodes_to_its_shape(stage, clip, family, frames):
    s = stage(family)
    out = run(s, [video("a", clip(frames))])
    z = latent(out, 0)
    # (C, (T - 1) / 4 + 1, H / 8, W / 8) for a 48x32 clip; the tiny VAEs have 4 latent channels.
    t = (frames - 1) // 4 + 1
    assert z.dtype == np.float16 and z.shape == (4, t, 4, 6)
    assert out.column("latent_shape").to_pylist() == [f"4x{t}x4x6"]
    assert out.column("latent_frames").to_pylist() == [frames]
    assert out.column("_reject").to_pylist() == [None]
    decoded = s.vae.decode(torch.from_numpy(z[None].copy()))
    assert tuple(decoded.shape) == (1, 3, frames, 32, 48)


def test_frame_count_rule_keeps_the_largest_4k_plus_1_not_above_it():
    assert [valid_frames(n, 4) for n in (50, 49, 52, 53, 5, 4, 1, 0)] == [49, 49, 49, 53, 5, 1, 1, 0]


def test_a_clip_is_trimmed_not_rejected_and_too_short_is_rejected(stage, clip):
    out = run(stage("wan"), [video("ten", clip(10)), video("four", clip(4))])
    assert out.column("latent_frames").to_pylist() == [9, None]
    assert latent(out, 0).shape[1] == 3  # (9 - 1) / 4 + 1
    reasons = out.column("_reject").to_pylist()
    assert reasons[0] is None and reasons[1].startswith("vae:too_few_frames: 4 frames")
    # A lower `min_frames` takes the same clip as one latent frame.
    kept = run(stage("wan", min_frames=1), [video("four", clip(4))])
    assert kept.column("latent_frames").to_pylist() == [1] and latent(kept, 0).shape[1] == 1


def test_same_input_same_latent_in_any_batch(stage, clip):
    s = stage("wan")
    a, b = clip(9), clip(9, pattern="mandelbrot")
    batch = run(s, [video("a", a), video("b", b), video("a2", a)])
    alone = run(s, [video("a", a)])
    np.testing.assert_array_equal(latent(batch, 0), latent(batch, 2))
    np.testing.assert_array_equal(latent(batch, 0), latent(alone, 0))
    assert not np.array_equal(latent(batch, 0), latent(batch, 1))


def test_video_latent_is_the_posterior_mean_scaled_by_the_config(stage, clip):
    s = stage("wan")
    data = clip(9)
    config = s.vae.model.config
    with torch.no_grad():
        z = s.vae.model.encode(pixels(data, 9)).latent_dist.mean[0]
    # Wan's pipeline: (z - latents_mean) / latents_std per channel.
    mean = torch.tensor(config.latents_mean)[:, None, None, None]
    std = torch.tensor(config.latents_std)[:, None, None, None]
    expected = ((z - mean) / std).numpy()
    np.testing.assert_allclose(latent(run(s, [video("a", data)]), 0), expected, rtol=2e-3, atol=2e-3)


def test_image_latent_through_autoencoderkl_with_shift_and_scaling(stage):
    s = stage("flux")
    assert s.vae.class_name == "AutoencoderKL" and not s.vae.video
    png = image_png(56, 40)
    out = run(s, [{"key": "i", "source": "/unused.png", "media_type": "image", "media": png}])
    z = latent(out, 0)
    assert z.dtype == np.float16 and z.shape == (16, 5, 7)  # (C, H / 8, W / 8)
    assert out.column("latent_frames").to_pylist() == [1] and out.column("latent_shape").to_pylist() == ["16x5x7"]
    from PIL import Image

    x = torch.from_numpy(np.array(Image.open(io.BytesIO(png)))).float().permute(2, 0, 1)[None] / 127.5 - 1.0
    with torch.no_grad():
        mean = s.vae.model.encode(x).latent_dist.mean[0]
    # FLUX's pipeline: (z - shift_factor) * scaling_factor.
    np.testing.assert_allclose(z, ((mean - 0.1159) * 0.3611).numpy(), rtol=2e-3, atol=2e-3)
    assert tuple(s.vae.decode(torch.from_numpy(z[None].copy())).shape) == (1, 3, 40, 56)


def test_image_from_source_is_center_cropped_to_multiples_of_8_or_rejected(stage, tmp_path):
    path = tmp_path / "odd.png"
    path.write_bytes(image_png(60, 44))
    row = {"key": "odd", "source": str(path), "media_type": "image", "media": None}
    out = run(stage("sdxl"), [row])
    assert latent(out, 0).shape == (4, 5, 7)  # 44 -> 40, 60 -> 56
    rejected = run(stage("sdxl", misaligned="reject"), [row])
    assert rejected.column("_reject").to_pylist()[0].startswith("vae:misaligned_size: 60x44 px")
    marks = np.arange(44 * 60).reshape(1, 44, 60, 1)
    cropped = aligned_crop(marks, 8)
    assert cropped.shape == (1, 40, 56, 1) and cropped[0, 0, 0, 0] == marks[0, 2, 2, 0]


def test_bad_rows_are_rejected_with_reasons_and_the_rest_encoded(stage, clip):
    out = run(stage("wan"), [video("ok", clip(9)), video("none", None), video("junk", b"not an mp4")])
    reasons = out.column("_reject").to_pylist()
    assert reasons[0] is None and latent(out, 0).shape == (4, 3, 4, 6)
    assert reasons[1].startswith("vae:no_clip:")
    assert reasons[2].startswith("error:")
    assert out.column("latent").to_pylist()[1:] == [None, None]
    on_image_vae = run(stage("sdxl"), [video("v", clip(9))])
    assert on_image_vae.column("_reject").to_pylist()[0].startswith("vae:not_an_image:")


def test_latent_is_a_float16_npy_member_of_the_sample(stage, clip):
    s = stage("cogvideox")
    out = run(s, [video("a", clip(9))])
    files = SampleLayout(out.schema, declared_members([s])).encode(out)[0]
    stored = np.load(io.BytesIO(files["latent.npy"]))
    assert stored.dtype == np.float16 and stored.shape == (4, 3, 4, 6)
    np.testing.assert_array_equal(stored, latent(out, 0))


def test_missing_model_fails_preflight_naming_it_and_the_fix():
    problems = VaeLatents(model="/nowhere/wan-vae").preflight()
    assert len(problems) == 1 and "/nowhere/wan-vae" in problems[0] and "--tiny-models" in problems[0]


def test_tiny_models_have_the_family_of_the_real_name(tmp_path, tiny):
    assert [_tiny_class(REAL[f]) for f in ("wan", "cogvideox", "sdxl")] == \
        ["AutoencoderKLWan", "AutoencoderKLCogVideoX", "AutoencoderKL"]
    assert _tiny_class("hunyuanvideo-community/HunyuanVideo") == "AutoencoderKLHunyuanVideo"
    swapped = VaeLatents().tiny_params(str(tmp_path))  # the default model: Wan2.1's VAE
    assert json.loads((Path(swapped.model) / "config.json").read_text())["_class_name"] == "AutoencoderKLWan"
    # A local checkpoint's family comes from its config, whatever its folder is called.
    renamed = shutil.copytree(tiny("cogvideox"), tmp_path / "my-vae")
    assert _tiny_class(str(renamed)) == "AutoencoderKLCogVideoX"


def test_a_diffusers_pipeline_folder_is_read_from_its_vae_folder(tmp_path, tiny, clip):
    pipeline = tmp_path / "pipeline"
    shutil.copytree(tiny("wan"), pipeline / "vae")
    (pipeline / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline", "vae": ["diffusers",
                                                           "AutoencoderKLWan"]}))
    s = VaeLatents(model=str(pipeline), device="cpu")
    s.setup()
    assert s.vae.class_name == "AutoencoderKLWan"


@pytest.mark.gpu
def test_encodes_on_the_gpu_with_the_same_code(tiny, clip):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here; run with -m gpu on a machine that has one")
    s = VaeLatents(model=tiny("wan"), device="cuda", dtype="bfloat16")
    s.setup()
    out = run(s, [video("a", clip(17)), video("b", clip(17))])
    assert s.vae.model.device.type == "cuda"
    assert latent(out, 0).shape == (4, 5, 4, 6) and latent(out, 0).dtype == np.float16


def test_real_photos_of_odd_sizes_encode_each_at_its_own_cropped_size(stage, shared_data):
    names = ["deepface_img21.jpg", "deepface_img16.jpg"]  # 439x579 and 740x418 px: neither side a multiple of 8
    rows = [{"key": f"p{i}", "source": str(shared_data / "images" / n), "media_type": "image", "media": None}
            for i, n in enumerate(names)]
    out = run(stage("sdxl"), rows)
    assert out.column("_reject").to_pylist() == [None, None]
    assert [latent(out, i).shape for i in range(2)] == [(4, 579 // 8, 439 // 8), (4, 418 // 8, 740 // 8)]
