"""Caption normalization and word n-gram shingle hashing (stages/dedup/shingles.py)."""

from __future__ import annotations

import numpy as np
import pytest

from dataprep.stages.dedup.shingles import normalize, shingle_hashes


def test_normalize_lowercases_strips_punctuation_and_collapses_space():
    assert normalize("  A  Cat,\tsat\n on THE mat!!  ") == "a cat sat on the mat"
    assert normalize("ﬁne ＡＢＣ") == "fine abc"          # NFKC folds ligatures and full-width forms
    assert normalize("snake_case “quoted” — dash") == "snake case quoted dash"
    assert normalize(None) == "" and normalize("") == ""


def test_kernel_words_match_normalize():
    texts = ["A black Honda motorcycle, parked.", "Café crème — très ﬁne!", "x_y z", "", None, "one"]
    sh = shingle_hashes(texts, ngram=1)
    assert sh.counts.tolist() == [len(normalize(t).split()) for t in texts]


def test_equal_after_normalization_gives_equal_shingles():
    sh = shingle_hashes(["Ünïcode café, “quoted” — done", "ünïcode CAFÉ quoted done", "A cat sat.", "a cat sat"],
                        ngram=2)
    assert np.array_equal(sh.row(0), sh.row(1))
    assert np.array_equal(sh.row(2), sh.row(3))
    assert not np.array_equal(sh.row(0), sh.row(2))


def test_ngram_counts_short_and_empty_rows():
    sh = shingle_hashes(["one two three four", "one", "", None, "one two"], ngram=3)
    assert sh.counts.tolist() == [2, 1, 0, 0, 1]  # L-n+1; a short caption is one shingle; empty none


def test_word_order_matters_for_bigrams_not_unigrams():
    a, b = "red car blue house", "blue house red car"
    uni = shingle_hashes([a, b], ngram=1)
    bi = shingle_hashes([a, b], ngram=2)
    assert np.array_equal(uni.row(0), uni.row(1))
    assert len(np.intersect1d(bi.row(0), bi.row(1))) == 2  # "red car", "blue house"; not "car blue"


def test_batch_composition_does_not_change_hashes():
    texts = ["A man riding a wave on a surfboard.", "Ünïcode café", "plain ascii text"]
    whole = shingle_hashes(texts, ngram=2)
    for i, t in enumerate(texts):
        alone = shingle_hashes([t], ngram=2)
        assert np.array_equal(alone.row(0), whole.row(i))


def test_ngram_out_of_range_names_the_option():
    with pytest.raises(ValueError, match="`ngram` must be in"):
        shingle_hashes(["x"], ngram=0)
