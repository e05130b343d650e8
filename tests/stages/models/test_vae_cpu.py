"""A video VAE on the CPU: its 3D convolutions run through oneDNN and its RMS norms by a sum of squares, with
PyTorch's own results; half precision keeps PyTorch's kernels."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm
from torch import nn

from dataprep.stages.models.load import build_tiny
from dataprep.stages.models.vae import load_vae
from dataprep.stages.models.vae_cpu import speed_up_on_cpu

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")


def _kernels(model: nn.Module, x: torch.Tensor) -> set[str]:
    with torch.autograd.profiler.profile() as prof, torch.inference_mode():
        model(x)
    return {event.key for event in prof.key_averages()}


def test_narrow_conv3d_on_a_batch_of_one_uses_onednn_with_the_same_result():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.Conv3d(4, 4, 3, stride=(1, 2, 2), padding=(0, 1, 1)))
    x = torch.randn(1, 3, 5, 48, 80)  # channels x frames x height under PyTorch's 20480: its native kernel
    with torch.inference_mode():
        native = conv(x)
    assert "aten::slow_conv3d_forward" in _kernels(conv, x)

    assert speed_up_on_cpu(conv) == {"conv3d": 2, "rms_norm": 0}
    kernels = _kernels(conv, x)
    assert "aten::mkldnn_convolution" in kernels and "aten::slow_conv3d_forward" not in kernels
    with torch.inference_mode():
        torch.testing.assert_close(conv(x), native, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("channel_first", [True, False])
def test_rms_norm_is_a_sum_of_squares_with_the_same_result(channel_first):
    torch.manual_seed(0)
    norm = WanRMS_norm(4, channel_first=channel_first, images=False, bias=True)
    nn.init.normal_(norm.gamma)
    nn.init.normal_(norm.bias)
    x = torch.randn(1, 4, 3, 8, 8) if channel_first else torch.randn(1, 3, 8, 8, 4)
    x[0, ..., 0] = 0  # an all-zero vector: F.normalize's eps keeps it zero
    with torch.inference_mode():
        native = norm(x)
    assert "aten::linalg_vector_norm" in _kernels(norm, x)

    assert speed_up_on_cpu(norm) == {"conv3d": 0, "rms_norm": 1}
    assert "aten::linalg_vector_norm" not in _kernels(norm, x)
    with torch.inference_mode():
        torch.testing.assert_close(norm(x), native, rtol=1e-5, atol=1e-6)


def test_half_precision_inputs_keep_pytorchs_kernels():
    model = nn.Sequential(nn.Conv3d(4, 4, 3), WanRMS_norm(4, images=False)).to(torch.bfloat16)
    x = torch.randn(1, 4, 3, 16, 16, dtype=torch.bfloat16)
    native_kernels = _kernels(model, x)
    with torch.inference_mode():
        native = model(x)
    speed_up_on_cpu(model)
    assert _kernels(model, x) == native_kernels
    with torch.inference_mode():
        assert torch.equal(model(x), native)


def test_a_video_vae_loaded_on_the_cpu_takes_the_fast_kernels(tmp_path):
    vae = load_vae(str(build_tiny("vae", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", tmp_path)), device="cpu")
    pixels = torch.rand(1, 3, 5, 32, 48) * 2 - 1
    with torch.autograd.profiler.profile() as prof:
        vae.encode(pixels)
    kernels = {event.key for event in prof.key_averages()}
    assert "aten::mkldnn_convolution" in kernels
    assert not kernels & {"aten::slow_conv3d_forward", "aten::linalg_vector_norm"}
