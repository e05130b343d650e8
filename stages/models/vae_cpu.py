"""Faster CPU kernels for a video VAE's layers, with the same results.

Two of PyTorch's CPU choices make a small or narrow video VAE several times slower than it need be:
- A float32 batch-1 conv3d whose channels x frames x height is under 20480 goes to PyTorch's native kernel,
  ~4x slower than oneDNN's on video frames (its heuristic leaves the width out): a 4-channel 3x3x3 convolution
  over 6 frames of 640x360 takes 0.29 s native and 0.07 s in oneDNN on one thread. Video VAEs encode a few
  frames at a time, so their narrow and first layers fall on the slow side.
- `F.normalize` over the channel axis of a (B, C, T, H, W) tensor (Wan's RMS norm) reduces along a strided
  axis: 146 ms for 4 x 6 x 640x360 values, where a sum of squares and `rsqrt` take 14 ms.
GPU and half-precision inputs keep PyTorch's own kernels, so a patched model can still be moved.
"""

from __future__ import annotations

from typing import Any

# The attributes of diffusers' channel RMS norms (WanRMS_norm and its copies) that the fast path reads.
_RMS_NORM_ATTRIBUTES = ("channel_first", "scale", "gamma", "bias")


def speed_up_on_cpu(model: Any) -> dict[str, int]:
    """Give `model`'s zero-padded 3D convolutions oneDNN and its channel RMS norms a faster reduction for float32
    CPU inputs; returns how many layers of each kind were changed."""
    import torch
    from torch import nn

    changed = {"conv3d": 0, "rms_norm": 0}
    for module in model.modules():
        if isinstance(module, nn.Conv3d) and module.padding_mode == "zeros" and not isinstance(module.padding, str) \
                and torch.backends.mkldnn.is_available():
            module._conv_forward = _onednn_conv3d(module, module._conv_forward)
            changed["conv3d"] += 1
        elif type(module).__name__.endswith("RMS_norm") and all(hasattr(module, a) for a in _RMS_NORM_ATTRIBUTES):
            module.forward = _rms_norm(module, module.forward)
            changed["rms_norm"] += 1
    return changed


def _fast(x: Any) -> bool:
    import torch

    return x.device.type == "cpu" and x.dtype == torch.float32


def _onednn_conv3d(conv: Any, native: Any) -> Any:
    import torch

    def forward(x: Any, weight: Any, bias: Any) -> Any:
        if not (_fast(x) and _fast(weight)):
            return native(x, weight, bias)
        return torch.mkldnn_convolution(x.contiguous(), weight, bias, list(conv.padding), list(conv.stride),
                                        list(conv.dilation), conv.groups)

    return forward


def _rms_norm(norm: Any, native: Any) -> Any:
    def forward(x: Any) -> Any:
        if not _fast(x):
            return native(x)
        # x / max(|x|, 1e-12), as F.normalize computes it.
        unit = x * (x * x).sum(1 if norm.channel_first else -1, keepdim=True).clamp_min(1e-24).rsqrt()
        return unit * norm.scale * norm.gamma + norm.bias

    return forward
