"""Candidate pairs from LSH buckets, and their optional verification.

Per partition of bucket records (bucket key, node, kind, payload): rows that share a
bucket are candidates. A bucket of up to `max_bucket` rows yields all its pairs; a
larger one (a caption repeated thousands of times) yields a star from its smallest
node, which keeps it connected at linear cost.

Verification (when on) recomputes similarity exactly from the payload:
- text (kind 0): Jaccard of the two shingle-hash sets >= `text_threshold`;
- visual (kind 1): the payload is every frame's window hashes (WINDOWS per frame); a
  frame matches when some window of it is within `max_hamming` bits of some window of
  a frame of the other clip; the pair matches when at least `frame_match` of the frames
  of the clip with fewer frames match.
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
    """Exact Jaccard similarity of two uint64 sets."""
    a, b = np.unique(a), np.unique(b)
    if len(a) == 0 and len(b) == 0:
        return 0.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def frame_match_fraction(a: np.ndarray, b: np.ndarray, *, windows: int, max_hamming: int) -> float:
    """Fraction of the shorter clip's frames that have a near-identical frame in the other."""
    from stages.dedup.phash import hamming

    fa, fb = a.reshape(-1, windows), b.reshape(-1, windows)
    if len(fa) == 0 or len(fb) == 0:
        return 0.0
    if len(fa) > len(fb):
        fa, fb = fb, fa
    d = hamming(fa.ravel(), fb.ravel()).reshape(len(fa), windows, len(fb), windows)
    near = d.min(axis=(1, 3)) <= max_hamming                  # (Fa, Fb)
    return float(near.any(axis=1).mean())


def bucket_pairs(bucket: np.ndarray, node: np.ndarray, *, max_bucket: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) into the records that share a bucket key, each pair once."""
    order = np.lexsort((node, bucket))
    bk = bucket[order]
    starts = np.flatnonzero(np.r_[True, bk[1:] != bk[:-1]])
    sizes = np.diff(np.r_[starts, len(bk)])
    ii, jj = [], []
    for s, n in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist(), strict=True):
        idx = order[s:s + n]
        if n <= max_bucket:
            a, b = np.triu_indices(n, 1)
            ii.append(idx[a])
            jj.append(idx[b])
        else:
            ii.append(np.repeat(idx[0], n - 1))
            jj.append(idx[1:])
    if not ii:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    i, j = np.concatenate(ii), np.concatenate(jj)
    keep = node[i] != node[j]
    return i[keep], j[keep]


def candidate_edges(bucket: np.ndarray, node: np.ndarray, kind: np.ndarray, pay_values: np.ndarray,
                    pay_offsets: np.ndarray, *, verify: Verify, max_bucket: int) -> tuple[np.ndarray, np.ndarray]:
    """Undirected edges (u, v) between nodes that share a bucket (and pass verification)."""
    i, j = bucket_pairs(bucket, node, max_bucket=max_bucket)
    if len(i) == 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint64)
    # One check per distinct (node pair, kind).
    lo = np.minimum(node[i], node[j])
    hi = np.maximum(node[i], node[j])
    _, first = np.unique(np.stack([lo, hi, kind[i].astype(np.uint64)]), axis=1, return_index=True)
    i, j = i[first], j[first]
    if not verify.enabled:
        return node[i], node[j]
    ok = np.zeros(len(i), dtype=bool)
    for t, (a, b) in enumerate(zip(i.tolist(), j.tolist(), strict=True)):
        pa_ = pay_values[pay_offsets[a]:pay_offsets[a + 1]]
        pb_ = pay_values[pay_offsets[b]:pay_offsets[b + 1]]
        if kind[a] == TEXT:
            ok[t] = text_jaccard(pa_, pb_) >= verify.text_threshold
        else:
            ok[t] = frame_match_fraction(pa_, pb_, windows=verify.windows,
                                         max_hamming=verify.max_hamming) >= verify.frame_match
    return node[i[ok]], node[j[ok]]
