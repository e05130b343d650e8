"""Perceptual hashes of frames (DCT pHash, 63 bits) in crop-tolerant windows, and the token sets MinHash is taken of.

    w = frames_window_hashes([jpeg_bytes, ...])   # (F * WINDOWS,) uint64: WINDOWS hashes per frame, 0 = whole
    toks = hash_tokens(w, bands=4)                # uint64 tokens of the clip

pHash: grayscale, box-resampled to 32x32, 2-D DCT, the 8x8 lowest frequencies without the
DC term (63 coefficients) each compared with their median: a 63-bit hash that survives
re-encoding, resizing, stretching and a uniform brightness or colour change exactly or
within a few bits.

Bars: dark letterbox/pillarbox bars are cut off first (`trim_bars`), so a padded copy
hashes the same picture as its source whether or not the `letterbox` stage ran before.

Crops: a crop moves the picture inside the frame and changes the plain pHash by 10-30
bits (as much as two unrelated images differ), and a window misplaced by 2% of the side
already costs ~4-8 bits. So each frame is hashed in WINDOWS windows, every pair of a row
interval and a column interval from INTERVALS: all intervals that cut 0-20% of the side in
5% steps split between the two edges, plus finer and deeper centred ones. Any crop of up to
~20% per axis (centred, from one side, off-centre, by a different amount per axis) leaves a
picture within 2.5% per edge of one window, which `candidates.frame_distance` compares with
the crop's whole-frame hash.

Speed and size: all window hashes of a frame are two small matrix products: the frame,
resized to 64x64 once, times the (8 lowest DCT rows x box resampling) matrix of every
interval, on each side (numba, one thread: BLAS threads fight each other over products
this small); ~1 ms a 256 px frame with its decoding, faster than the six cv2 pHashes of a
frame before. The verification payload is the 361 hashes: 2.9 KB a frame.

Tokens: the hashes of TOKEN_WINDOWS are each cut into `bands` fixed bit groups and each
(group index, group value) is a token, so a frame that differs in a few bits still shares
most of its groups; a clip's set is the union over its frames, so a trimmed clip or one at
another fps, whose sampled frames move a little in time, still shares most tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from dataprep.stages.dedup._jit import njit

HASH_BITS = 63
_HASH_SIDE = 32   # samples per side the DCT is taken of (pHash's 32x32)
_LOW = 8          # the 8x8 lowest-frequency DCT coefficients
_WORK_SIDE = 64   # pixels: frames are area-resized to 64x64 first; a 30% crop still spans 45 px for 32 samples

# Per-axis windows as (start, end) fractions of the side: the lattice that cuts i*5% at the
# start and j*5% at the end, i + j <= 4, plus centred cuts of 2.5, 7.5, 12.5 and 15% per edge:
# centre crops are the most common, and the deeper centred windows give a 20% centre crop
# token windows of its own that match the source's (see TOKEN_WINDOWS). The whole side comes
# first, so window 0 is the whole frame.
_STEP, _MAX_STEPS = 0.05, 4
INTERVALS = tuple([(round(i * _STEP, 4), round(1 - j * _STEP, 4))
                   for i in range(_MAX_STEPS + 1) for j in range(_MAX_STEPS + 1 - i)]
                  + [(c, 1 - c) for c in (0.025, 0.075, 0.125, 0.15)])
WINDOWS = len(INTERVALS) ** 2   # 361: window k covers rows INTERVALS[k // 19] and columns INTERVALS[k % 19]


def _centred(iv: tuple[float, float]) -> bool:
    return abs(iv[0] - (1 - iv[1])) < 1e-9


def _side(iv: tuple[float, float]) -> bool:
    """Cut by at most 10% of the side, from one edge only (or not at all)."""
    return (iv[0] == 0 or iv[1] == 1) and iv[0] + 1 - iv[1] <= 0.1 + 1e-9


# Windows whose hashes make the LSH tokens (73 of 361): centred on both axes, or cut by at
# most 10% from one edge of each axis (a side or a corner). A centre, side or corner crop then
# shares tokens with its source: its own windows of that family fall on or near the source's.
# Not all of them: MinHash compares whole token sets, so every window that cannot match
# dilutes those that do, and more tokens meet unrelated frames by chance.
TOKEN_WINDOWS = np.array([r * len(INTERVALS) + c for r, ri in enumerate(INTERVALS) for c, ci in enumerate(INTERVALS)
                          if (_centred(ri) and _centred(ci)) or (_side(ri) and _side(ci))])
# Windows compared with the same window of the other frame (25): they leave out up to 10% at a
# side or a corner, where logos and captions go, so an overlaid copy still matches in one of
# them. Not all 361: each comparison is one more chance for unrelated frames to meet.
EDIT_WINDOWS = np.array([r * len(INTERVALS) + c for r, ri in enumerate(INTERVALS) for c, ci in enumerate(INTERVALS)
                         if _side(ri) and _side(ci)])

# Bars: a line (row or column) is bar when no pixel is brighter than BAR_LEVEL (of 255; black
# bars decode to 0-16, a +5% brightness edit adds 13), or when at least 80% of it is pure black
# (<= 4): a logo or subtitles burnt into a bar cross it. Dark pictures are rarely that black
# (the Hubble deep field's sky has a median of 14). The bar lines touching an edge are cut, so
# a dark strip of the picture next to a bar goes too; it goes from the source as well (there it
# touches the edge), where a rule that skipped brighter lines would cut into one picture only.
BAR_LEVEL = 24
_BLACK, _BLACK_SHARE = 4, 0.8
# A frame whose bars leave less than this share of its area is mostly black: skipped, like a
# flat frame (a 9:16 video pillarboxed in 16:9 leaves 32%). Stretched to 64x64, such a sliver
# hashes like many other slivers.
MIN_PICTURE = 0.25


def decode_gray(jpeg: bytes) -> np.ndarray | None:
    """A JPEG/PNG thumbnail as grayscale (H, W) uint8, or None if it does not decode."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    return arr if arr is not None and arr.size else None


def _bar_lines(gray: np.ndarray, *, axis: int) -> np.ndarray:
    """Which rows (axis=1) or columns (axis=0) of the frame look like bar (see BAR_LEVEL)."""
    if gray.size == 0:
        return np.ones(gray.shape[1 - axis], dtype=bool)
    return (gray.max(axis=axis) <= BAR_LEVEL) | ((gray <= _BLACK).mean(axis=axis) >= _BLACK_SHARE)


def _bar_depth(clean: np.ndarray) -> int:
    """Lines to cut from the start of a side: the run of bar-clean lines there (see BAR_LEVEL)."""
    return len(clean) if clean.all() else int(np.argmin(clean))


def trim_bars(gray: np.ndarray) -> np.ndarray:
    """The frame without dark letterbox (top/bottom) and pillarbox (left/right) bars; empty
    when it is all dark."""
    rows = _bar_lines(gray, axis=1)
    gray = gray[_bar_depth(rows):len(rows) - _bar_depth(rows[::-1])]
    cols = _bar_lines(gray, axis=0)
    return gray[:, _bar_depth(cols):len(cols) - _bar_depth(cols[::-1])]


@lru_cache(maxsize=1)
def _interval_basis() -> tuple[np.ndarray, np.ndarray]:
    """(len(INTERVALS) * 8, 64) float32 and its transpose, C-contiguous: per interval, the 8
    lowest DCT-II rows composed with the box resampling of that interval of a 64-pixel side
    to 32 samples."""
    n = np.arange(_HASH_SIDE)
    dct = np.cos(np.pi * np.arange(_LOW)[:, None] * (2 * n[None, :] + 1) / (2 * _HASH_SIDE))   # (8, 32)
    pixel = np.arange(_WORK_SIDE + 1, dtype=np.float64)
    rows = []
    for a, b in INTERVALS:
        edges = _WORK_SIDE * (a + (b - a) * np.arange(_HASH_SIDE + 1) / _HASH_SIDE)          # (33,) sample edges
        lo = np.maximum(edges[:-1, None], pixel[None, :-1])
        hi = np.minimum(edges[1:, None], pixel[None, 1:])
        resample = np.clip(hi - lo, 0, None) / np.diff(edges)[:, None]                       # (32, 64)
        rows.append(dct @ resample)                                                         # (8, 64)
    basis = np.concatenate(rows).astype(np.float32)
    return basis, np.ascontiguousarray(basis.T)


@njit(cache=True, fastmath=True)
def _window_coefficients(basis, basis_t, img):
    """(K*8, K*8) float32: basis @ img @ basis.T (basis_t = basis.T, contiguous), one thread."""
    k8, n = basis.shape
    half = np.zeros((n, k8), dtype=np.float32)          # img @ basis.T
    for i in range(n):
        for p in range(n):
            v = img[i, p]
            for j in range(k8):
                half[i, j] += v * basis_t[p, j]
    out = np.zeros((k8, k8), dtype=np.float32)
    for i in range(k8):
        for p in range(n):
            v = basis[i, p]
            for j in range(k8):
                out[i, j] += v * half[p, j]
    return out


_BIT_WEIGHTS = np.uint64(1) << np.arange(HASH_BITS, dtype=np.uint64)


def window_hashes(gray: np.ndarray) -> np.ndarray:
    """(WINDOWS,) uint64 pHashes of every window of a (bar-trimmed) frame; 0 is the whole frame."""
    import cv2

    small = cv2.resize(gray, (_WORK_SIDE, _WORK_SIDE), interpolation=cv2.INTER_AREA)
    k = len(INTERVALS)
    coef = _window_coefficients(*_interval_basis(), small.astype(np.float32))                 # (8K, 8K)
    coef = coef.reshape(k, _LOW, k, _LOW).transpose(0, 2, 1, 3).reshape(k * k, _LOW * _LOW)[:, 1:]  # (W, 63)
    median = np.partition(coef, HASH_BITS // 2, axis=1)[:, HASH_BITS // 2:HASH_BITS // 2 + 1]      # (W, 1)
    return ((coef > median) * _BIT_WEIGHTS).sum(axis=1, dtype=np.uint64)


# Frames flatter than this (grey-level standard deviation at 32x32, of 255) are skipped:
# a black or single-colour frame has a meaningless pHash that every fade to black shares.
MIN_CONTRAST = 4.0


def informative(gray: np.ndarray) -> bool:
    """Whether a frame has enough structure for its pHash to mean anything."""
    import cv2

    small = cv2.resize(gray, (_HASH_SIDE, _HASH_SIDE), interpolation=cv2.INTER_AREA)
    return float(small.std()) >= MIN_CONTRAST


def picture(gray: np.ndarray) -> np.ndarray | None:
    """The frame without its bars, or None when too little is left (MIN_PICTURE) or it is flat."""
    pic = trim_bars(gray)
    return pic if pic.size >= MIN_PICTURE * gray.size and informative(pic) else None


def frames_window_hashes(frames: Sequence[bytes] | None) -> np.ndarray:
    """(F * WINDOWS,) uint64: `window_hashes` of the `picture` of every frame that decodes and
    has one, frame-major."""
    pictures = [p for p in (picture(g) for g in map(decode_gray, frames or ()) if g is not None) if p is not None]
    out = [window_hashes(p) for p in pictures]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.uint64)


def band_masks(bands: int) -> list[np.ndarray]:
    """Which of the 63 bits each band holds: interleaved, so every band mixes frequencies."""
    return [np.arange(i, HASH_BITS, bands) for i in range(bands)]


def hash_tokens(hashes: np.ndarray, *, bands: int) -> np.ndarray:
    """Distinct uint64 tokens (band index, band bits) of a clip's window hashes (F * WINDOWS,
    frame-major), from the TOKEN_WINDOWS of each frame."""
    if len(hashes) == 0:
        return np.zeros(0, dtype=np.uint64)
    hashes = hashes.reshape(-1, WINDOWS)[:, TOKEN_WINDOWS].ravel()                     # (N,) = (F * 73,)
    bits = ((hashes[:, None] >> np.arange(HASH_BITS, dtype=np.uint64)[None, :]) & np.uint64(1)).astype(np.uint64)
    toks = []
    for i, idx in enumerate(band_masks(bands)):
        weights = np.uint64(1) << np.arange(len(idx), dtype=np.uint64)
        value = (bits[:, idx] * weights[None, :]).sum(axis=1).astype(np.uint64)      # (N,)
        toks.append((np.uint64(i) << np.uint64(56)) | value)
    return np.unique(np.concatenate(toks))
