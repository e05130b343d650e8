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
Both are compiled (numba) over all the pairs of a partition at once: with hundreds of windows
a frame, or ~10 shingles a caption, a Python loop per pair would cost more than the comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dataprep.stages.dedup._jit import njit

TEXT, VISUAL = 0, 1


@dataclass(frozen=True)
class Verify:
    """Thresholds of the exact check of a candidate pair; `enabled=False` keeps every candidate."""

    enabled: bool
    text_threshold: float
    max_hamming: int
    frame_match: float
    windows: int


@njit(cache=True)
def jaccard(a, b):
    """Exact Jaccard similarity of two uint64 token lists taken as sets (0 when both are empty)."""
    a = np.unique(a)
    b = np.unique(b)
    i = j = inter = 0
    while i < a.shape[0] and j < b.shape[0]:
        if a[i] == b[j]:
            inter += 1
            i += 1
            j += 1
        elif a[i] < b[j]:
            i += 1
        else:
            j += 1
    union = a.shape[0] + b.shape[0] - inter
    return inter / union if union else 0.0


@njit(cache=True)
def _text_jaccards(va, oa, vb, ob, pairs):
    """`jaccard` of each pair t in `pairs`, whose token lists are va[oa[t]:oa[t+1]] and vb[ob[t]:ob[t+1]]."""
    out = np.zeros(pairs.shape[0])
    for n in range(pairs.shape[0]):
        t = pairs[n]
        out[n] = jaccard(va[oa[t]:oa[t + 1]], vb[ob[t]:ob[t + 1]])
    return out


@njit(cache=True)
def _popcount64(x):
    """Set bits of a uint64 (SWAR: pairs, nibbles, bytes, then a multiply sums the bytes)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@njit(cache=True)
def _frame_pair_distance(a, i, b, j, w, same, enough):
    """Bits between frame i of clip a and frame j of clip b (flat (F*w,) window hashes, window 0
    the whole frame; see `frame_distance`), or the first value <= `enough` met."""
    best = np.uint64(64)
    whole_a, whole_b = a[i * w], b[j * w]
    for k in range(w):
        best = min(best, _popcount64(whole_a ^ b[j * w + k]), _popcount64(a[i * w + k] ^ whole_b))
        if best <= enough:
            return best
    for k in same:
        best = min(best, _popcount64(a[i * w + k] ^ b[j * w + k]))
    return best


@njit(cache=True)
def _frame_distance_kernel(a, b, w, same):
    """(Fa, Fb) `_frame_pair_distance` of every frame pair of two clips."""
    na, nb = a.shape[0] // w, b.shape[0] // w
    out = np.empty((na, nb), dtype=np.int64)
    for i in range(na):
        for j in range(nb):
            out[i, j] = _frame_pair_distance(a, i, b, j, w, same, -1)
    return out


@njit(cache=True)
def _match_fraction(a, b, w, same, max_hamming):
    """Fraction of the shorter clip's frames with a frame of the other within max_hamming bits."""
    if a.shape[0] > b.shape[0]:
        a, b = b, a
    na, nb = a.shape[0] // w, b.shape[0] // w
    if na == 0:
        return 0.0
    hits = 0
    for i in range(na):
        for j in range(nb):
            if _frame_pair_distance(a, i, b, j, w, same, max_hamming) <= max_hamming:
                hits += 1
                break
    return hits / na


@njit(cache=True)
def _match_fractions(va, oa, vb, ob, pairs, w, same, max_hamming):
    """`_match_fraction` of each pair t in `pairs`, whose payloads are va[oa[t]:oa[t+1]] and vb[ob[t]:ob[t+1]]."""
    out = np.zeros(pairs.shape[0])
    for n in range(pairs.shape[0]):
        t = pairs[n]
        out[n] = _match_fraction(va[oa[t]:oa[t + 1]], vb[ob[t]:ob[t + 1]], w, same, max_hamming)
    return out


@njit(cache=True)
def similar(ta, tb, fa, fb, text_threshold, windows, same, max_hamming, frame_match):
    """Whether two rows pass verification on either signal, given their text payloads (token lists) and
    visual payloads (flat window hashes; `same` = edit_windows(windows)); an empty payload never matches."""
    if ta.shape[0] and tb.shape[0] and jaccard(ta, tb) >= text_threshold:
        return True
    return fa.shape[0] > 0 and fb.shape[0] > 0 and _match_fraction(fa, fb, windows, same, max_hamming) >= frame_match


def edit_windows(windows: int) -> np.ndarray:
    """phash.EDIT_WINDOWS, once `windows` is checked to be phash's layout (the kernels index into it unchecked)."""
    from dataprep.stages.dedup.phash import EDIT_WINDOWS, WINDOWS

    if windows != WINDOWS:
        raise ValueError(f"visual payloads hold {WINDOWS} window hashes a frame (phash.WINDOWS), got {windows}; "
                         "fix: hash frames with phash.frames_window_hashes")
    return EDIT_WINDOWS


def frame_distance(fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """(Fa, Fb) bits between frames of two clips, given (F, WINDOWS) window hashes each.

    Two frames are as close as the closest of: A's whole frame vs any window of B (A is a
    crop of B), B's whole frame vs any window of A (the reverse), and the same window in
    both for the EDIT_WINDOWS (a logo or a caption spoils the whole-frame hash and some
    windows, not all)."""
    same = edit_windows(fa.shape[1])
    return _frame_distance_kernel(np.ascontiguousarray(fa, dtype=np.uint64).ravel(),
                                  np.ascontiguousarray(fb, dtype=np.uint64).ravel(), fa.shape[1], same)


def frame_match_fraction(a: np.ndarray, b: np.ndarray, *, windows: int, max_hamming: int) -> float:
    """Fraction of the shorter clip's frames that have a frame within `max_hamming` bits
    (`frame_distance`) in the other; a and b are (F * windows,) window hashes."""
    same = edit_windows(windows)
    return float(_match_fraction(np.ascontiguousarray(a, dtype=np.uint64), np.ascontiguousarray(b, dtype=np.uint64),
                                 windows, same, max_hamming))


def bucket_pairs(bucket: np.ndarray, node: np.ndarray, *, max_bucket: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) into the records that share a bucket key (vectorized).

    Most buckets hold one record (a row's band keys are its own unless a near-duplicate shares
    them), so one sort finds the shared ones and only their records are sorted by (bucket, node).
    That first sort is of each key's high bits with the record's index in the low bits, one
    uint64 array: a plain sort, where an argsort of the keys cost half as much again. Keys whose
    high bits agree by chance only widen the subset, which the exact sort then splits. In a
    bucket of size <= max_bucket, the pairs at distance d = 1 .. max_bucket-1 in that order are
    all its pairs; a larger bucket gives the star from its first record (its smallest node)."""
    none = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    n = len(bucket)
    if n < 2:
        return none
    bits = np.uint64((n - 1).bit_length())
    packed = np.sort(((bucket.astype(np.uint64) >> bits) << bits) | np.arange(n, dtype=np.uint64))
    high = packed >> bits
    repeat = high[1:] == high[:-1]
    shared = np.r_[repeat, False] | np.r_[False, repeat]
    sub = (packed[shared] & ((np.uint64(1) << bits) - np.uint64(1))).astype(np.int64)
    order = sub[np.lexsort((node[sub], bucket[sub]))]
    bk = bucket[order]
    n = len(bk)
    if n < 2:
        return none
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
    text = np.flatnonzero(kind == TEXT)
    if len(text):
        ok[text] = _text_jaccards(va.astype(np.uint64, copy=False), oa, vb.astype(np.uint64, copy=False), ob,
                                  text) >= verify.text_threshold
    visual = np.flatnonzero(kind == VISUAL)
    if len(visual):
        frac = _match_fractions(va.astype(np.uint64, copy=False), oa, vb.astype(np.uint64, copy=False), ob, visual,
                                verify.windows, edit_windows(verify.windows), verify.max_hamming)
        ok[visual] = frac >= verify.frame_match
    return ok
