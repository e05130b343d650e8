"""LSH banding (stages/dedup/lsh.py)."""

from __future__ import annotations

import numpy as np
import pytest

from dataprep.stages.dedup.lsh import band_keys, candidate_probability, lsh_params


def test_params_are_datasketch_optimal_and_fit_num_perm():
    from datasketch import MinHashLSH

    b, r = lsh_params(0.7, 128)
    lsh = MinHashLSH(threshold=0.7, num_perm=128)
    assert (b, r) == (lsh.b, lsh.r)
    rb, rr = lsh_params(0.7, 128, fp_weight=0.2, fn_weight=0.8)
    assert rb * rr <= 128 and candidate_probability(0.8, rb, rr) > 0.98   # recall-leaning choice


def test_equal_bands_share_keys_and_bands_do_not_collide():
    sig = np.tile(np.arange(12, dtype=np.uint32), (2, 1))
    sig[1, 4:8] = 999                       # rows differ in band 1 only (r=4)
    keys = band_keys(sig, 3, 4, salt=1)
    assert keys.shape == (2, 3)
    assert keys[0, 0] == keys[1, 0] and keys[0, 2] == keys[1, 2] and keys[0, 1] != keys[1, 1]
    same = np.tile(np.arange(4, dtype=np.uint32), 3)[None, :]   # all bands hold the same values
    k = band_keys(same, 3, 4)
    assert len(set(k[0].tolist())) == 3                          # the band index is in the key
    assert not np.array_equal(band_keys(sig, 3, 4, salt=2), keys)


def test_too_many_bands_names_the_fix():
    with pytest.raises(ValueError, match="`bands` x `rows` must be <= num_perm"):
        band_keys(np.zeros((1, 8), np.uint32), 3, 3)
