"""LSH banding: signatures -> band keys; rows that share a band key are candidate pairs.

    bands, rows = lsh_params(0.7, 128)          # datasketch's optimal (b, r) for a threshold
    keys = band_keys(sig, bands, rows, salt=1)  # (R, bands) uint64

Two sets with Jaccard s share at least one band key with probability 1 - (1 - s^r)^b.
"""

from __future__ import annotations

import numpy as np

from dataprep.stages.dedup._jit import njit
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


@njit(cache=True)
def _band_keys_kernel(sig, rows, mult, band_salt, out):
    """out[i, b] = splitmix64((sum_r sig[i, b*rows + r] * mult[r]) ^ band_salt[b]), wrapping mod 2^64."""
    for i in range(out.shape[0]):
        for b in range(out.shape[1]):
            acc = np.uint64(0)
            for r in range(rows):
                acc += np.uint64(sig[i, b * rows + r]) * mult[r]
            x = acc ^ band_salt[b]
            x ^= x >> np.uint64(30)
            x *= np.uint64(0xBF58476D1CE4E5B9)
            x ^= x >> np.uint64(27)
            x *= np.uint64(0x94D049BB133111EB)
            x ^= x >> np.uint64(31)
            out[i, b] = x


def band_keys(sig: np.ndarray, bands: int, rows: int, *, salt: int = 0) -> np.ndarray:
    """(R, bands) uint64: a hash of each band's `rows` signature values, the band index
    and `salt` (so bands, and text and visual signals, never share keys).

    Compiled: as (R, bands, rows) numpy temporaries it cost more than the signatures themselves."""
    if bands * rows > sig.shape[1]:
        raise ValueError(f"`bands` x `rows` must be <= num_perm ({sig.shape[1]}), got {bands} x {rows}")
    band_salt = _mix(np.arange(bands, dtype=np.uint64) + np.uint64(salt) * np.uint64(1 << 20))   # (b,)
    out = np.empty((sig.shape[0], bands), dtype=np.uint64)
    _band_keys_kernel(np.ascontiguousarray(sig), rows, np.resize(_POS_MULT, rows), band_salt, out)
    return out
