"""An embedding column as a matrix of unit vectors, and which rows cannot be compared.

A row's embedding is a list of floats (`list`, `large_list` or `fixed_size_list`, possibly
wrapped in an extension type such as Ray Data's tensor type). Rows that cannot take part
in a cosine comparison get a reason instead of a vector: null or empty (the embedding
stage failed on that row), non-finite values, or a zero vector (no direction).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

FAMILY = "semantic_dup"


@dataclass(frozen=True)
class Embeddings:
    """The comparable rows of a block and why the others are not."""

    rows: np.ndarray            # (V,) int64 row indices within the block, ascending
    vectors: np.ndarray         # (V, D) float32, each of norm 1
    bad_rows: np.ndarray        # (B,) int64 rows that cannot be compared
    bad_reasons: list[str]      # (B,) reject reason of each bad row


def _flat_lists(col):
    """(offsets (N+1,), values, null mask (N,)) of a list-like Arrow array, sliced correctly."""
    import pyarrow as pa

    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if isinstance(col.type, pa.ExtensionType):
        col = col.storage
    t = col.type
    n = len(col)
    nulls = col.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_fixed_size_list(t):
        size = t.list_size
        offsets = (np.arange(n + 1, dtype=np.int64) + col.offset) * size
        return offsets, col.values, nulls
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return col.offsets.to_numpy().astype(np.int64), col.values, nulls
    raise TypeError(f"an embedding column must hold lists of floats, got type {t}; fix: point `column` at "
                    "the vectors written by the embedding stage")


def lengths(col) -> Counter:
    """How many non-null, non-empty rows have each vector length (reads no float values)."""
    offsets, _, nulls = _flat_lists(col)
    n = np.diff(offsets)[~nulls]
    return Counter({int(k): int(v) for k, v in zip(*np.unique(n[n > 0], return_counts=True), strict=True)})


def _rows(vals: np.ndarray, starts: np.ndarray, dim: int) -> np.ndarray:
    """(V, D) vectors of length `dim` starting at `starts` in the flat values, without an index
    array per value: a view when they are back to back (the usual case), a row gather when they
    are on a grid of `dim` (fixed-size lists with null rows), else row by row."""
    if len(starts) == 0:
        return np.zeros((0, dim), np.float32)
    if starts[-1] - starts[0] == dim * (len(starts) - 1):
        return vals[starts[0]:starts[0] + dim * len(starts)].reshape(-1, dim)
    if (starts % dim == 0).all():
        return vals[:len(vals) // dim * dim].reshape(-1, dim)[starts // dim]
    return np.stack([vals[s:s + dim] for s in starts.tolist()])


def extract(col, *, column: str) -> Embeddings:
    """The unit vectors of a block's embedding column (every non-null vector has the same length:
    the stage checks `lengths` over all blocks before any vector is read)."""
    offsets, values, nulls = _flat_lists(col)
    size = np.diff(offsets)
    empty = nulls | (size == 0)
    ok = np.flatnonzero(~empty)
    dim = int(size[ok[0]]) if len(ok) else 0
    if (size[ok] != dim).any():
        raise ValueError(f"`{column}` holds vectors of lengths {sorted(lengths(col))}; check `lengths` first")
    vals = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32)  # null values -> NaN
    mat = _rows(vals, offsets[ok], dim)
    norm = np.sqrt(np.einsum("ij,ij->i", mat, mat))     # (V,) NaN or inf when a value is
    good = np.isfinite(norm) & (norm > 0)
    vectors = mat / norm[:, None] if good.all() else mat[good] / norm[good, None]
    bad = np.sort(np.r_[np.flatnonzero(empty), ok[~good]])
    reason = {**{int(r): f"{FAMILY}:no_embedding: `{column}` is null or empty" for r in np.flatnonzero(empty)},
              **{int(r): f"{FAMILY}:bad_embedding: `{column}` holds NaN or infinite values"
                 for r in ok[~np.isfinite(norm)]},
              **{int(r): f"{FAMILY}:bad_embedding: `{column}` is the zero vector" for r in ok[norm == 0]}}
    return Embeddings(rows=ok[good].astype(np.int64), vectors=np.ascontiguousarray(vectors, np.float32),
                      bad_rows=bad.astype(np.int64), bad_reasons=[reason[int(r)] for r in bad])
