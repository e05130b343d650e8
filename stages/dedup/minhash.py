"""Batch MinHash: signatures of many token sets in one compiled pass.

    sig = signatures(sh.hashes, sh.offsets, num_perm=128, seed=42)   # (R, 128) uint32

Permutation i is the multiply-add hash h_i(x) = (a_i * x + b_i) mod 2^64 of a 64-bit
token hash x (a_i odd); a signature value is the top 32 bits of the row's minimum.
The shift is monotone, so min-then-shift equals shift-then-min. Multiply-shift hashing
(Dietzfelbinger et al.) is universal, so two sets agree in one position with probability
close to their Jaccard similarity, as with datasketch's (a*x+b) mod (2^61-1), without the
modulo. Values are not comparable with datasketch's or rensa's (other hash functions).

The numba kernel and `signatures_numpy` (the same maths as uint64 matrix ops with a
segmented `np.minimum.reduceat`) give identical results; tests check it.
"""

from __future__ import annotations

import numpy as np

from dataprep.stages.dedup._jit import njit

EMPTY = np.uint32(0xFFFFFFFF)


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) coefficients of `num_perm` hash functions, (P,) uint64 each; `a` is odd."""
    rng = np.random.Generator(np.random.PCG64(seed))
    a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64)
    return a, b


@njit(cache=True)
def _minhash_kernel(hashes, offsets, a, b, out):
    """out[r, p] = top 32 bits of min over row r's tokens x of a[p]*x + b[p] (mod 2^64)."""
    n_perm = a.shape[0]
    mins = np.empty(n_perm, dtype=np.uint64)
    for r in range(offsets.shape[0] - 1):
        s0 = offsets[r]
        s1 = offsets[r + 1]
        if s0 == s1:
            continue
        mins[:] = np.uint64(0xFFFFFFFFFFFFFFFF)
        for s in range(s0, s1):
            x = hashes[s]
            for p in range(n_perm):
                v = a[p] * x + b[p]
                if v < mins[p]:
                    mins[p] = v
        for p in range(n_perm):
            out[r, p] = np.uint32(mins[p] >> np.uint64(32))


def signatures(hashes: np.ndarray, offsets: np.ndarray, *, num_perm: int, seed: int) -> np.ndarray:
    """(R, num_perm) uint32 MinHash signatures of the R token sets given CSR-style.

    Row i's tokens are hashes[offsets[i]:offsets[i+1]] (uint64). An empty row gets
    all-0xFFFFFFFF (callers treat it as "no signature").
    """
    a, b = permutations(num_perm, seed)
    out = np.full((len(offsets) - 1, num_perm), EMPTY, dtype=np.uint32)
    _minhash_kernel(np.ascontiguousarray(hashes, dtype=np.uint64),
                    np.ascontiguousarray(offsets, dtype=np.int64), a, b, out)
    return out


def signatures_numpy(hashes: np.ndarray, offsets: np.ndarray, *, num_perm: int, seed: int) -> np.ndarray:
    """The same signatures as `signatures`, in plain numpy (reference and fallback)."""
    a, b = permutations(num_perm, seed)
    n_rows = len(offsets) - 1
    out = np.full((num_perm, n_rows), EMPTY, dtype=np.uint32)  # (P, R)
    nonempty = np.flatnonzero(np.diff(offsets) > 0)
    if len(nonempty):
        with np.errstate(over="ignore"):
            m = hashes[None, :].astype(np.uint64) * a[:, None] + b[:, None]   # (P, S)
        mins = np.minimum.reduceat(m, offsets[nonempty], axis=1)          # (P, R_nonempty)
        out[:, nonempty] = (mins >> np.uint64(32)).astype(np.uint32)
    return out.T.copy()


def has_signature(sig: np.ndarray) -> np.ndarray:
    """(R,) bool: rows whose token set was not empty."""
    return ~np.all(sig == EMPTY, axis=1)
