"""The video VAE on the CPU as PyTorch runs it against `speed_up_on_cpu` (oneDNN 3D convolutions, RMS norm by a
sum of squares), in the same run, on one torch thread.

    .venv/bin/python benchmarks/bench_vae_cpu.py

Times `encode` of 17 frames of 640x360 through the tiny Wan VAE that `--tiny-models` builds (base_dim 4), each
way, best of `--rounds`; checks that both give the same latent. Also times the two layers alone: a 4 -> 4 channel
3x3x3 convolution over 6 frames and Wan's channel RMS norm, and a 3 -> 96 channel convolution, the first layer of a
real Wan VAE (wide layers gain little). The last line is `vae_speedup=X max_latent_diff=Y`.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from typing import Any


def best(fn: Callable[[], Any], rounds: int) -> float:
    """The shortest of `rounds` timed calls of `fn`, after one untimed call."""
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import diffusers
    import torch
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm

    from dataprep.stages.models.vae_cpu import speed_up_on_cpu

    torch.set_num_threads(1)
    torch.manual_seed(0)
    layers = {
        "conv3d 4->4, 6x360x640": (torch.nn.Conv3d(4, 4, 3), torch.randn(1, 4, 6, 360, 640)),
        "conv3d 3->96, 3x360x640": (torch.nn.Conv3d(3, 96, 3), torch.randn(1, 3, 3, 360, 640)),
        "rms_norm 4 ch, 6x360x640": (WanRMS_norm(4, images=False), torch.randn(1, 4, 6, 360, 640)),
    }
    with torch.inference_mode():
        for name, (native, x) in layers.items():
            fast = copy.deepcopy(native)
            speed_up_on_cpu(fast)
            a, b = best(lambda m=native, x=x: m(x), args.rounds), best(lambda m=fast, x=x: m(x), args.rounds)
            print(f"{name}: native {a * 1000:.1f} ms, sped up {b * 1000:.1f} ms, x{a / b:.2f}")

        vae = diffusers.AutoencoderKLWan(base_dim=4, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1).eval()
        fast_vae = copy.deepcopy(vae)
        changed = speed_up_on_cpu(fast_vae)
        pixels = torch.rand(1, 3, 17, 360, 640) * 2 - 1
        native_s = best(lambda: vae.encode(pixels), args.rounds)
        fast_s = best(lambda: fast_vae.encode(pixels), args.rounds)
        diff = (vae.encode(pixels).latent_dist.mode() - fast_vae.encode(pixels).latent_dist.mode()).abs().max()
    print(f"tiny Wan VAE, 17 frames 640x360, 1 thread: native {native_s:.2f} s, sped up {fast_s:.2f} s ({changed})")
    print(f"vae_speedup={native_s / fast_s:.2f} max_latent_diff={diff.item():.2e}")


if __name__ == "__main__":
    main()
