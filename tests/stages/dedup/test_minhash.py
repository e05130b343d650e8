"""Batch MinHash kernel (stages/dedup/minhash.py): equals the numpy reference, estimates Jaccard."""

from __future__ import annotations

import numpy as np

from dataprep.stages.dedup.minhash import EMPTY, has_signature, signatures, signatures_numpy


def _csr(sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(sets) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sets], out=offsets[1:])
    flat = np.concatenate(sets) if sets else np.zeros(0, np.uint64)
    return flat.astype(np.uint64), offsets


def test_compiled_kernel_equals_numpy_reference():
    rng = np.random.default_rng(0)
    sets = [rng.integers(0, 2**63, size=rng.integers(0, 30), dtype=np.uint64) for _ in range(200)]
    flat, off = _csr(sets)
    a = signatures(flat, off, num_perm=64, seed=7)
    b = signatures_numpy(flat, off, num_perm=64, seed=7)
    assert a.shape == (200, 64) and a.dtype == np.uint32
    assert np.array_equal(a, b)


def test_empty_rows_have_no_signature_and_seed_changes_values():
    flat, off = _csr([np.array([1, 2, 3], np.uint64), np.zeros(0, np.uint64)])
    sig = signatures(flat, off, num_perm=16, seed=1)
    assert has_signature(sig).tolist() == [True, False]
    assert np.all(sig[1] == EMPTY)
    assert not np.array_equal(sig[0], signatures(flat, off, num_perm=16, seed=2)[0])


def test_agreement_estimates_jaccard():
    """Mean absolute error of the estimate over many pairs is near the binomial bound (128 perms)."""
    rng = np.random.default_rng(1)
    pairs, truth = [], []
    for _ in range(300):
        universe = rng.integers(0, 2**63, size=60, dtype=np.uint64)
        k = int(rng.integers(5, 55))
        a, b = universe[:k + 5], universe[rng.integers(0, 55):]
        sa, sb = set(a.tolist()), set(b.tolist())
        truth.append(len(sa & sb) / len(sa | sb))
        pairs += [a, b]
    flat, off = _csr(pairs)
    sig = signatures(flat, off, num_perm=128, seed=3)
    est = (sig[0::2] == sig[1::2]).mean(axis=1)
    err = np.abs(est - np.array(truth))
    assert err.mean() < 0.04 and abs(float((est - np.array(truth)).mean())) < 0.01
