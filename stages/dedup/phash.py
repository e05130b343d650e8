"""Perceptual hashes of frames (DCT pHash, 63 bits) and the token sets MinHash is taken of.

    w = frames_window_hashes([jpeg_bytes, ...])   # (F * 6,) uint64: 6 window hashes per frame
    toks = hash_tokens(w, bands=4)                # uint64 tokens of the clip

pHash: grayscale, area-resize to 32x32, 2-D DCT, the 8x8 lowest frequencies without the
DC term (63 coefficients) each compared with their median: a 63-bit hash that survives
re-encoding, resizing and a uniform brightness change exactly or within a few bits.
Each frame is hashed whole and in five 90% windows (centre, corners) so that a crop of
up to ~10% reproduces one of them (see `candidates.frame_distance`; measured: the test edits
stay within 4 bits, distinct whole photos are >= 10 bits apart).
Tokens: each window hash is cut into `bands` fixed bit groups and each (group index,
group value) is a token, so a frame that differs in a few bits still shares most of its
groups; a clip's set is the union over its frames, so a trimmed clip or one at another
fps, whose sampled frames move a little in time, still shares most tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HASH_BITS = 63
_HASH_SIDE = 32   # pixels: the pHash input (the DCT of a 32x32 image)
_LOW = 8          # the 8x8 lowest-frequency DCT coefficients


def phash_gray(gray: np.ndarray) -> int:
    """The 63-bit pHash of one grayscale image (H, W) uint8, as an int."""
    import cv2

    small = cv2.resize(gray, (_HASH_SIDE, _HASH_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    coef = cv2.dct(small)[:_LOW, :_LOW].ravel()[1:]       # (63,) without DC
    bits = coef > np.median(coef)
    return _pack(bits)


def _pack(bits: np.ndarray) -> int:
    """The bool vector as an int, bit i = bits[i]."""
    return int.from_bytes(np.packbits(bits.astype(np.uint8), bitorder="little").tobytes(), "little")


def decode_gray(jpeg: bytes) -> np.ndarray | None:
    """A JPEG/PNG thumbnail as grayscale (H, W) uint8, or None if it does not decode."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    return arr if arr is not None and arr.size else None


# A crop moves the picture inside the frame and changes the plain pHash by 10-30 bits
# (as much as two unrelated images differ); so each frame is also hashed in windows that
# a crop of up to ~10% reproduces: the centre and the four corners at 90% of each side.
WINDOWS = 6
_WINDOW_FRAC = 0.9


def window_hashes(gray: np.ndarray) -> np.ndarray:
    """(WINDOWS,) uint64 pHashes of the whole frame, its centre and its four corners (90%)."""
    h, w = gray.shape
    ch, cw = max(1, round(h * _WINDOW_FRAC)), max(1, round(w * _WINDOW_FRAC))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    views = (gray, gray[y0:y0 + ch, x0:x0 + cw], gray[:ch, :cw], gray[:ch, w - cw:],
             gray[h - ch:, :cw], gray[h - ch:, w - cw:])
    return np.array([phash_gray(v) for v in views], dtype=np.uint64)


# Frames flatter than this (grey-level standard deviation at 32x32, of 255) are skipped:
# a black or single-colour frame has a meaningless pHash that every fade to black shares.
MIN_CONTRAST = 4.0


def informative(gray: np.ndarray) -> bool:
    """Whether a frame has enough structure for its pHash to mean anything."""
    import cv2

    small = cv2.resize(gray, (_HASH_SIDE, _HASH_SIDE), interpolation=cv2.INTER_AREA)
    return float(small.std()) >= MIN_CONTRAST


def frames_window_hashes(frames: Sequence[bytes] | None) -> np.ndarray:
    """(F * WINDOWS,) uint64: `window_hashes` of every informative frame that decodes, frame-major."""
    grays = [g for g in map(decode_gray, frames or ()) if g is not None and informative(g)]
    out = [window_hashes(g) for g in grays]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Hamming distances between two sets of 64-bit hashes."""
    x = a[:, None] ^ b[None, :]
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(axis=-1)


def band_masks(bands: int) -> list[np.ndarray]:
    """Which of the 63 bits each band holds: interleaved, so every band mixes frequencies."""
    return [np.arange(i, HASH_BITS, bands) for i in range(bands)]


def hash_tokens(hashes: np.ndarray, *, bands: int) -> np.ndarray:
    """(<= F*bands,) distinct uint64 tokens (band index, band bits) of a clip's frame hashes."""
    if len(hashes) == 0:
        return np.zeros(0, dtype=np.uint64)
    bits = ((hashes[:, None] >> np.arange(HASH_BITS, dtype=np.uint64)[None, :]) & np.uint64(1)).astype(np.uint64)
    toks = []
    for i, idx in enumerate(band_masks(bands)):
        weights = np.uint64(1) << np.arange(len(idx), dtype=np.uint64)
        value = (bits[:, idx] * weights[None, :]).sum(axis=1).astype(np.uint64)      # (F,)
        toks.append((np.uint64(i) << np.uint64(56)) | value)
    return np.unique(np.concatenate(toks))
