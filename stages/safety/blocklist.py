"""Matching caption text against a blocklist of words and phrases, through the usual disguises.

Both the caption and every blocklist term go through the same `normalize`:
- Unicode NFKC and case folding (full-width letters, ligatures, `Ａ` -> `a`);
- confusable letters of other scripts mapped to the Latin letter they imitate (Cyrillic `а`, Greek `ο`);
- accents dropped (`é` -> `e`);
- inside a word that has letters, leetspeak digits and symbols mapped to letters (`s3x` -> `sex`,
  `@ss` -> `ass`); standalone numbers stay numbers (`2024`).
Then text is cut into words at anything that is not a letter or digit, and a term matches only a
whole run of words: `ass` does not match `assassin` or `class`, `cock` does not match `cocktail`.
Letters spelled out one by one (`s e x`, `s.e.x`, `s-e-x`) are also joined and matched.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

# Letters of other scripts that render like Latin ones (Unicode confusables, the common subset).
_CONFUSABLES = str.maketrans({
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ɡ": "g", "һ": "h",
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
    "υ": "u", "χ": "x", "ω": "w", "ѵ": "v", "ӏ": "l", "ɑ": "a", "ɩ": "i", "ʏ": "y",
})
# Leetspeak, applied only inside words with letters. `1`, `!`, `|` and `l` all fold to `i`, on both
# sides of the match, so `k1ll`, `ki11` and `kill` meet whichever spelling the blocklist uses.
_LEET = str.maketrans({"0": "o", "1": "i", "!": "i", "|": "i", "l": "i", "3": "e", "4": "a", "@": "a",
                       "5": "s", "$": "s", "7": "t", "+": "t", "8": "b", "9": "g"})
# A word: letters and digits, with leet symbols allowed inside it (`@ss`, `$ex`, `a$$`).
_WORD = re.compile(r"[\w@$!|+]+")


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold().translate(_CONFUSABLES)
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _word(token: str) -> str:
    # `!`, `|` and `+` at a word's ends are punctuation ("wow!"), inside it letters ("sh!t").
    token = token.replace("_", "").strip("!|+")
    if not any(c.isalpha() for c in token):
        return token.strip("@$!|+")  # a number stays a number; bare symbols are no word
    return token.translate(_LEET)


def normalize(text: str) -> list[str]:
    """The words of `text` after folding case, scripts, accents and leetspeak (see the module docstring)."""
    return [w for w in (_word(t) for t in _WORD.findall(_fold(text))) if w]


def _joined_letters(words: list[str]) -> list[str]:
    """`words` with every run of two or more one-letter words joined into one (`s e x` -> `sex`)."""
    out: list[str] = []
    run: list[str] = []
    for word in [*words, ""]:
        if len(word) == 1 and word.isalpha():
            run.append(word)
            continue
        if len(run) >= 2:
            out.append("".join(run))
        else:
            out.extend(run)
        run = []
        if word:
            out.append(word)
    return out


class Blocklist:
    """A set of words and phrases; `find` returns the first term a text contains, as whole words."""

    def __init__(self, terms: Iterable[str]) -> None:
        self.terms: dict[tuple[str, ...], str] = {}
        for term in terms:
            words = tuple(normalize(term))
            if words:
                self.terms.setdefault(words, term.strip())
        self._longest = max((len(t) for t in self.terms), default=0)

    def __len__(self) -> int:
        return len(self.terms)

    def find(self, text: str | None) -> str | None:
        """The blocklist term (as written in the list) that `text` contains, or None."""
        if not text or not self.terms:
            return None
        words = normalize(text)
        for candidate in (words, _joined_letters(words)):
            for start in range(len(candidate)):
                for size in range(1, min(self._longest, len(candidate) - start) + 1):
                    hit = self.terms.get(tuple(candidate[start:start + size]))
                    if hit is not None:
                        return hit
        return None
