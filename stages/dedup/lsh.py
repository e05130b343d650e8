"""LSH banding: signatures -> band keys; rows that share a band key are candidate pairs.

    bands, rows = lsh_params(0.7, 128)          # datasketch's optimal (b, r) for a threshold
    keys = band_keys(sig, bands, rows, salt=1)  # (R, bands) uint64

Two sets with Jaccard s share at least one band key with probability 1 - (1 - s^r)^b.
"""

from __future__ import annotations

import numpy as np

from dataprep.stages.dedup.shingles import _POS_MULT


def lsh_params(threshold: float, num_perm: int, *, fp_weight: float = 0.5,
               fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimizing the weighted false-positive and false-negative areas
    (datasketch's `MinHashLSH` method); bands * rows <= num_perm."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, fp_weight, fn_weight)


def candidate_probability(s: float, bands: int, rows: int) -> float:
    """Probability that two sets of Jaccard `s` share at least one band."""
    return 1.0 - (1.0 - s ** rows) ** bands


def _mix(x: np.ndarray) -> np.ndarray:
    from dataprep.stages.dedup.components import mix64

    return mix64(x)


def band_keys(sig: np.ndarray, bands: int, rows: int, *, salt: int = 0) -> np.ndarray:
    """(R, bands) uint64: a hash of each band's `rows` signature values, the band index
    and `salt` (so bands, and text and visual signals, never share keys)."""
    if bands * rows > sig.shape[1]:
        raise ValueError(f"`bands` x `rows` must be <= num_perm ({sig.shape[1]}), got {bands} x {rows}")
    n = sig.shape[0]
    view = sig[:, :bands * rows].reshape(n, bands, rows).astype(np.uint64)   # (R, b, r)
    mult = np.resize(_POS_MULT, rows)                                         # (r,)
    with np.errstate(over="ignore"):
        acc = (view * mult[None, None, :]).sum(axis=2, dtype=np.uint64)      # (R, b)
        acc ^= _mix(np.arange(bands, dtype=np.uint64) + np.uint64(salt) * np.uint64(1 << 20))[None, :]
    return _mix(acc)
