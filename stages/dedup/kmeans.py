"""Spherical k-means over unit vectors, cut into pieces a driver combines without holding rows.

Cosine similarity is the metric of CLIP embeddings, so centroids are unit vectors and a
point belongs to the centroid of highest dot product (spherical k-means, Dhillon & Modha
2001). The pieces: `kmeans_pp` seeds centroids from a sample (Arthur & Vassilvitskii,
"k-means++", 2007, greedy variant); each block of rows returns `partial_sums` against the current
centroids, and `update` turns the summed partials into the next centroids (one Lloyd
step); `assign` gives each row its nearest centroid and, near a boundary, its second.
Nothing here imports Ray.
"""

from __future__ import annotations

import math

import numpy as np

# Rows per matrix product: bounds the (rows, k) similarity matrix of a block of any size.
CHUNK = 8192


def auto_clusters(n: int, iterations: int) -> int:
    """k that minimizes the work of the whole dedup: Lloyd costs (iterations + 1) x n x k dot
    products, the pairwise step n^2 / k for clusters of equal size; the sum is least at
    k = sqrt(n / (iterations + 1))."""
    return max(1, min(n, round(math.sqrt(n / (iterations + 1)))))


def duplicate_radius(threshold: float) -> float:
    """Euclidean distance between two unit vectors of cosine `threshold`: sqrt(2 - 2 cos)."""
    return math.sqrt(2.0 - 2.0 * threshold)


def kmeans_pp(sample: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(k', D) unit centroids picked among the rows of `sample` (S, D) by greedy k-means++
    seeding; k' < k only when the sample has fewer than k distinct rows.

    Greedy (scikit-learn's default): each step draws 2 + log(k) candidates by D^2 sampling and
    keeps the one that lowers the total squared distance most. Plain k-means++ now and then
    seeds two centroids in one tight cluster, which Lloyd steps do not undo."""
    rng = np.random.default_rng(seed)
    s = len(sample)
    tries = 2 + int(math.log(max(k, 1)))
    chosen = [int(rng.integers(s))]
    d2 = np.maximum(2.0 - 2.0 * (sample @ sample[chosen[0]]), 0.0).astype(np.float64)   # (S,)
    for _ in range(1, min(k, s)):
        total = d2.sum()
        if total <= 0:  # every sample row sits on a chosen centroid
            break
        # D^2 sampling by inverse CDF (rng.choice(p=...) re-validates p on every call).
        cand = np.minimum(np.searchsorted(np.cumsum(d2), rng.random(tries) * total, side="right"), s - 1)
        new = np.minimum(d2[:, None], np.maximum(2.0 - 2.0 * (sample @ sample[cand].T), 0.0))  # (S, tries)
        best = int(new.sum(axis=0).argmin())
        chosen.append(int(cand[best]))
        d2 = new[:, best]
    return np.ascontiguousarray(sample[chosen], dtype=np.float32)


def fit_sample(sample: np.ndarray, k: int, seed: int, *, iterations: int = 5) -> np.ndarray:
    """(k', D) centroids of an in-memory sample: k-means++ seeding, then Lloyd steps on the sample
    alone (for splitting one oversized cluster, whose members fit a task as a sample)."""
    centroids = kmeans_pp(sample, k, seed)
    for _ in range(iterations):
        centroids, shift = update(centroids, *partial_sums(sample, centroids))
        if shift < 1e-4:
            break
    return centroids


def _nearest(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(N,) index of each row's nearest centroid, in chunks of CHUNK rows."""
    out = np.empty(len(vectors), dtype=np.int64)
    for lo in range(0, len(vectors), CHUNK):
        out[lo:lo + CHUNK] = (vectors[lo:lo + CHUNK] @ centroids.T).argmax(axis=1)
    return out


def partial_sums(vectors: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One block's share of a Lloyd step: (K, D) float64 sums of the rows nearest each
    centroid, and (K,) their counts."""
    k, d = centroids.shape
    label = _nearest(vectors, centroids)
    counts = np.bincount(label, minlength=k)
    bounds = np.r_[0, np.cumsum(counts)]
    grouped = vectors[np.argsort(label, kind="stable")]              # (N, D) rows by cluster
    sums = np.zeros((k, d), dtype=np.float64)
    for c in np.flatnonzero(counts):  # slice sums: np.add.reduceat / np.add.at are 20-100x slower here
        sums[c] = grouped[bounds[c]:bounds[c + 1]].sum(axis=0, dtype=np.float64)
    return sums, counts


def update(centroids: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, float]:
    """The next centroids (the normalized mean direction of their rows; a centroid with no rows
    stays where it is) and how far the farthest one moved (1 - cosine)."""
    norm = np.linalg.norm(sums, axis=1)
    moved = (counts > 0) & (norm > 0)
    new = centroids.astype(np.float64).copy()
    new[moved] = sums[moved] / norm[moved, None]
    shift = float((1.0 - (new * centroids).sum(axis=1)).max(initial=0.0))
    return new.astype(np.float32), shift


def assign(vectors: np.ndarray, centroids: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(N,) nearest centroid of each row, and (N,) its second-nearest where the row lies within
    `margin` (Euclidean, on the unit sphere) of the bisecting hyperplane of the two (-1
    elsewhere; everywhere when margin <= 0).

    Why this finds pairs split by a boundary: let x and y be unit vectors with nearest centroids
    A for x and B for y, B being x's second-nearest. y lies on B's side of the bisecting
    hyperplane of A and B, so x's distance to that hyperplane, (|x-B|^2 - |x-A|^2) / (2 |A-B|)
    = (cos(x,A) - cos(x,B)) / |A-B|, is at most the component of y - x along its normal, and at
    most |x - y|. With `margin` = |x - y| at the threshold (`duplicate_radius`) no such pair is
    missed; in high dimension the component along one normal is a small part of |x - y|, so a
    fraction of that radius catches nearly all of them at a fraction of the extra rows."""
    n, k = len(vectors), len(centroids)
    first = np.empty(n, dtype=np.int64)
    second = np.full(n, -1, dtype=np.int64)
    if k < 2 or margin <= 0:
        return _nearest(vectors, centroids), second
    gap = np.sqrt(np.maximum(2.0 - 2.0 * (centroids @ centroids.T), 0.0))   # (K, K) |A - B|
    for lo in range(0, n, CHUNK):
        sims = vectors[lo:lo + CHUNK] @ centroids.T                          # (C, K)
        top2 = np.argpartition(-sims, 1, axis=1)[:, :2]                       # (C, 2) unordered
        s2 = np.take_along_axis(sims, top2, axis=1)
        swap = s2[:, 1] > s2[:, 0]
        a = np.where(swap, top2[:, 1], top2[:, 0])
        b = np.where(swap, top2[:, 0], top2[:, 1])
        near = np.abs(s2[:, 0] - s2[:, 1]) <= margin * gap[a, b]
        first[lo:lo + CHUNK] = a
        second[lo:lo + CHUNK] = np.where(near, b, -1)
    return first, second
