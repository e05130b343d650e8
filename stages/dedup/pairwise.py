"""Which rows of one k-means cluster are near-duplicates: tiled cosine similarity, components.

The similarity matrix of a cluster of m rows is never held: tiles of TILE x TILE rows are
multiplied one at a time (a 2048^2 float32 tile is 16 MiB), the pairs at or above the
threshold merge labels at once (`merge`: hook and compress, a vectorized union-find), and the
tile is dropped. Memory is O(m x D + TILE^2) whatever m is. Identical vectors (the same file
embedded many times) are collapsed first, so a mass of copies costs one row, not m^2 pairs.
Nothing here imports Ray.
"""

from __future__ import annotations

import numpy as np

TILE = 2048


def merge(label: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Labels after joining every pair (i, j): `label` maps each index to the smallest index
    of its component (label[label] == label) and so does the result."""
    while len(i):
        li, lj = label[i], label[j]
        lo, hi = np.minimum(li, lj), np.maximum(li, lj)
        apart = lo != hi
        if not apart.any():
            break
        i, j = i[apart], j[apart]
        np.minimum.at(label, hi[apart], lo[apart])   # hook each larger root under a smaller one
        while True:                                  # compress: point every index at its root
            up = label[label]
            if np.array_equal(up, label):
                break
            label = up
    return label


def _collapse(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first row of each distinct vector (U,), index of each row's distinct vector (M,))."""
    view = np.ascontiguousarray(vectors).view(np.dtype((np.void, vectors.dtype.itemsize * vectors.shape[1])))
    _, first, inverse = np.unique(view.ravel(), return_index=True, return_inverse=True)
    return first, inverse.ravel()


def components(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, int]:
    """(M,) label of each row (the smallest row index of its component in the graph "cosine >=
    threshold") and the number of pairs compared, for unit vectors (M, D)."""
    m = len(vectors)
    if m < 2:
        return np.arange(m), 0
    first, inverse = _collapse(vectors)
    u = vectors[first]                                          # (U, D) distinct vectors
    label = np.arange(len(u))
    compared = 0
    for a in range(0, len(u), TILE):
        for b in range(a, len(u), TILE):
            sims = u[a:a + TILE] @ u[b:b + TILE].T              # (Ta, Tb)
            ii, jj = np.nonzero(sims >= threshold)
            if a == b:                                          # each pair once, no self-pairs
                upper = ii < jj
                ii, jj = ii[upper], jj[upper]
                compared += len(sims) * (len(sims) - 1) // 2
            else:
                compared += sims.size
            if len(ii):
                label = merge(label, ii + a, jj + b)
    comp = label[inverse]                                       # (M,) component, named by a distinct vector
    smallest = np.full(len(u), m, dtype=np.int64)
    np.minimum.at(smallest, comp, np.arange(m))
    return smallest[comp], compared
