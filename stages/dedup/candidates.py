"""Candidate pairs from LSH buckets, and their optional verification.

Per partition of bucket records (bucket key, node, kind): rows that share a bucket are
candidates. A bucket of up to `max_bucket` rows yields all its pairs; a
larger one (a caption repeated thousands of times) yields a star from its smallest
node, which keeps it connected at linear cost.

Verification (when on) recomputes similarity exactly from the payload:
- text (kind 0): Jaccard of the two shingle-hash sets >= `text_threshold`;
- visual (kind 1): the payload is every frame's window hashes (WINDOWS per frame); a
  frame matches a frame of the other clip when `frame_distance` <= `max_hamming`; the
  pair matches when at least `frame_match` of the frames of the clip with fewer frames
  have a match.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEXT, VISUAL = 0, 1


@dataclass(frozen=True)
class Verify:
    """Thresholds of the exact check of a candidate pair; `enabled=False` keeps every candidate."""

    enabled: bool
    text_threshold: float
    max_hamming: int
    frame_match: float
    windows: int


def text_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two uint64 sets (0 when both are empty)."""
    sa, sb = set(a.tolist()), set(b.tolist())   # Python sets: captions hold ~10 shingles
    union = len(sa | sb)
    return len(sa & sb) / union if union else 0.0


def frame_distance(fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """(Fa, Fb) bits between frames of two clips, given (F, WINDOWS) window hashes each.

    Two frames are as close as the closest of: A's whole frame vs any window of B (B is a
    crop of A... or the reverse: A is the crop), B's whole frame vs any window of A, and
    the same window in both (a logo or local edit spoils the whole-frame hash and one
    window, not all). 16 comparisons, not all 36 window pairs: fewer chances for two
    unrelated frames to meet by luck."""
    from dataprep.stages.dedup.phash import hamming

    na, nb, w = len(fa), len(fb), fa.shape[1]
    a_in_b = hamming(fa[:, 0], fb.ravel()).reshape(na, nb, w).min(axis=2)          # (Fa, Fb)
    b_in_a = hamming(fb[:, 0], fa.ravel()).reshape(nb, na, w).min(axis=2).T        # (Fa, Fb)
    same = np.min([hamming(fa[:, k], fb[:, k]) for k in range(w)], axis=0)          # (Fa, Fb)
    return np.minimum(np.minimum(a_in_b, b_in_a), same)


def frame_match_fraction(a: np.ndarray, b: np.ndarray, *, windows: int, max_hamming: int) -> float:
    """Fraction of the shorter clip's frames that have a frame within `max_hamming` bits in the other."""
    fa, fb = a.reshape(-1, windows), b.reshape(-1, windows)
    if len(fa) == 0 or len(fb) == 0:
        return 0.0
    if len(fa) > len(fb):
        fa, fb = fb, fa
    near = frame_distance(fa, fb) <= max_hamming                                 # (Fa, Fb)
    return float(near.any(axis=1).mean())


def bucket_pairs(bucket: np.ndarray, node: np.ndarray, *, max_bucket: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) into the records that share a bucket key (vectorized).

    Records are sorted by (bucket, node); in a bucket of size <= max_bucket, the pairs at
    distance d = 1 .. max_bucket-1 in that order are all its pairs; a larger bucket gives
    the star from its first record."""
    order = np.lexsort((node, bucket))
    bk = bucket[order]
    n = len(bk)
    if n < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    new = np.r_[True, bk[1:] != bk[:-1]]
    gid = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    size = np.diff(np.r_[starts, n])[gid]                   # (n,) size of each record's bucket
    ii, jj = [], []
    small = size <= max_bucket
    pos = np.arange(n)
    for d in range(1, min(max_bucket, int(size[small].max(initial=1)))):
        k = pos[:n - d]
        ok = small[k] & (gid[k] == gid[k + d])
        ii.append(order[k[ok]])
        jj.append(order[k[ok] + d])
    big = ~small & ~new                                     # non-first records of large buckets
    ii.append(order[starts[gid[big]]])
    jj.append(order[big])
    i, j = np.concatenate(ii), np.concatenate(jj)
    keep = node[i] != node[j]
    return i[keep], j[keep]


def candidate_pairs(bucket: np.ndarray, node: np.ndarray, kind: np.ndarray, *,
                    max_bucket: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct candidate pairs (lo, hi, kind) with lo < hi node ids, from shared buckets."""
    i, j = bucket_pairs(bucket, node, max_bucket=max_bucket)
    lo = np.minimum(node[i], node[j])
    hi = np.maximum(node[i], node[j])
    k = kind[i]
    order = np.lexsort((k, hi, lo))
    lo, hi, k = lo[order], hi[order], k[order]
    first = np.r_[True, (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1]) | (k[1:] != k[:-1])] if len(lo) else \
        np.zeros(0, dtype=bool)
    return lo[first], hi[first], k[first]


def verify_pairs(kind: np.ndarray, pay_a, pay_b, verify: Verify) -> np.ndarray:
    """(N,) bool: which pairs pass the exact check; pay_a/pay_b are pyarrow list<uint64> arrays."""
    n = len(kind)
    if not verify.enabled:
        return np.ones(n, dtype=bool)
    va, oa = pay_a.values.to_numpy(zero_copy_only=False), pay_a.offsets.to_numpy()
    vb, ob = pay_b.values.to_numpy(zero_copy_only=False), pay_b.offsets.to_numpy()
    ok = np.zeros(n, dtype=bool)
    for t in range(n):
        a, b = va[oa[t]:oa[t + 1]], vb[ob[t]:ob[t + 1]]
        if kind[t] == TEXT:
            ok[t] = text_jaccard(a, b) >= verify.text_threshold
        else:
            ok[t] = frame_match_fraction(a, b, windows=verify.windows,
                                         max_hamming=verify.max_hamming) >= verify.frame_match
    return ok
