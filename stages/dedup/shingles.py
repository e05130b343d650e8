"""Caption normalization and word n-gram shingles, hashed to uint64 for a whole batch at once.

    sh = shingle_hashes(["A cat sat.", None, "a CAT sat!"], ngram=2)
    sh.row(0)  # == sh.row(2): two bigram hashes; sh.counts[1] == 0

Normalization: Unicode NFKC, lowercase, punctuation (any non-word character, and `_`)
replaced by a space, whitespace collapsed. A caption shorter than `ngram` words is one
shingle of all its words; an empty or null caption has none (and no signature).

Speed: the batch is joined into one string (normalized with a few C-level calls; the
Unicode path only when it is not ASCII) and a numba kernel splits words, hashes them
(FNV-1a 64 over UTF-8 bytes, splitmix64 finalizer) and combines n-grams in one pass.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dataprep.stages.dedup._jit import njit

# Odd 64-bit constants: one multiplier per n-gram position makes the hash order-dependent.
_POS_MULT = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                      0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53,
                      0x27D4EB2F165667C5, 0x94D049BB133111EB], dtype=np.uint64)
MAX_NGRAM = len(_POS_MULT)
# Unicode path: every run of non-word characters (and underscores) becomes one space;
# \x00 separates the captions of a batch and survives.
_NON_WORD = re.compile(r"[^\w\x00]+|_+")
_SEP = "\x00"


def normalize(text: str | None) -> str:
    """The caption as compared: NFKC, lowercase, punctuation stripped, single spaces."""
    if not text:
        return ""
    text = _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text.replace(_SEP, " ")).lower())
    return " ".join(text.split())


@dataclass(frozen=True)
class Shingled:
    """Shingle hashes of a batch of texts, CSR-style: row i owns hashes[offsets[i]:offsets[i+1]]."""

    hashes: np.ndarray   # (S,) uint64; a row may repeat a hash
    offsets: np.ndarray  # (R+1,) int64

    def row(self, i: int) -> np.ndarray:
        """The distinct shingle hashes of row i, sorted."""
        return np.unique(self.hashes[self.offsets[i]:self.offsets[i + 1]])

    @property
    def counts(self) -> np.ndarray:
        """(R,) number of shingles per row; 0 for an empty or null text."""
        return np.diff(self.offsets)


@njit(cache=True)
def splitmix64(x):
    """splitmix64 finalizer: a bijection of uint64 (scalar or array, in place) that spreads every bit."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


@njit(cache=True)
def _shingle_kernel(data, n_rows, ngram, pos_mult):
    """Split `data` (UTF-8, rows separated by 0 bytes) into words and hash word n-grams.

    A word byte is >= 0x80 (part of a non-ASCII word character; the caller has already
    replaced non-ASCII punctuation) or ASCII [0-9a-z]; any other byte ends a word.
    """
    n = data.shape[0]
    words = np.empty(n // 2 + n_rows + 1, dtype=np.uint64)   # word hashes of the current row
    out = np.empty(n // 2 + n_rows + 1, dtype=np.uint64)     # >= number of shingles
    offsets = np.zeros(n_rows + 1, dtype=np.int64)
    n_out = 0
    row = 0
    n_words = 0
    h = np.uint64(0xCBF29CE484222325)
    in_word = False
    for i in range(n + 1):
        c = data[i] if i < n else 0
        is_word = c >= 0x80 or (0x30 <= c <= 0x39) or (0x61 <= c <= 0x7A)
        if is_word:
            if not in_word:
                h = np.uint64(0xCBF29CE484222325)
                in_word = True
            h = (h ^ np.uint64(c)) * np.uint64(0x100000001B3)
            continue
        if in_word:
            words[n_words] = splitmix64(h)
            n_words += 1
            in_word = False
        if c == 0:  # end of a row: emit its shingles
            if n_words > 0:
                if n_words < ngram:
                    acc = np.uint64(0)
                    for k in range(n_words):
                        acc += words[k] * pos_mult[k]
                    out[n_out] = splitmix64(acc)
                    n_out += 1
                else:
                    for s in range(n_words - ngram + 1):
                        acc = np.uint64(0)
                        for k in range(ngram):
                            acc += words[s + k] * pos_mult[k]
                        out[n_out] = splitmix64(acc)
                        n_out += 1
            row += 1
            offsets[row] = n_out
            n_words = 0
            if row == n_rows:
                break
    return out[:n_out].copy(), offsets


def _joined_bytes(texts: Sequence[str | None]) -> np.ndarray:
    """The batch as one normalized UTF-8 buffer, rows separated by 0 bytes, (B,) uint8."""
    parts = [t or "" for t in texts]
    joined = _SEP.join(parts)
    if joined.count(_SEP) != len(parts) - 1:  # a caption holds a NUL byte itself
        joined = _SEP.join(p.replace(_SEP, " ") for p in parts)
    if joined.isascii():  # ASCII is NFKC-invariant; the kernel treats ASCII punctuation as space
        joined = joined.lower()
    else:
        joined = _NON_WORD.sub(" ", unicodedata.normalize("NFKC", joined).lower())
    return np.frombuffer(joined.encode("utf-8"), dtype=np.uint8)


def shingle_hashes(texts: Sequence[str | None], *, ngram: int) -> Shingled:
    """Normalize each text, cut it into word n-grams and hash every n-gram to uint64."""
    if not 1 <= ngram <= MAX_NGRAM:
        raise ValueError(f"`ngram` must be in [1, {MAX_NGRAM}], got {ngram}")
    if len(texts) == 0:
        return Shingled(np.zeros(0, dtype=np.uint64), np.zeros(1, dtype=np.int64))
    hashes, offsets = _shingle_kernel(_joined_bytes(texts), len(texts), ngram, _POS_MULT)
    return Shingled(hashes, offsets)
