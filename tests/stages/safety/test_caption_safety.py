"""caption_safety: whole-word matching through case, accents, look-alikes and leetspeak; a classifier hook."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from pydantic import ValidationError

from dataprep.stages.safety.blocklist import Blocklist, normalize
from dataprep.stages.safety.caption import CaptionSafetyFilter


def _reasons(stage: CaptionSafetyFilter, captions: list[str | None]) -> list[str | None]:
    stage.setup()
    return stage.reasons(stage.process_batch(pa.table({"caption": pa.array(captions, pa.string())})))


@pytest.mark.parametrize("text", ["NUDE beach", "nud3 pics", "p0rn clip", "Ѕех tape", "s e x on film",
                                  "s.e.x on film", "ｎｕｄｅ", "a naked, tired man", "N-U-D-E", "núdé"])
def test_disguised_terms_are_caught(text):
    assert Blocklist(["nude", "porn", "sex", "naked"]).find(text) is not None


@pytest.mark.parametrize("text", ["Scunthorpe United", "a cocktail party", "an assassin's creed poster", "Sussex coast",
                                  "a classy glass", "the year 2024", "sextant on a ship", "Essex", "nudelsuppe"])
def test_innocent_words_containing_a_term_are_not(text):
    assert Blocklist(["cock", "ass", "sex", "nude", "tit"]).find(text) is None


def test_phrases_match_as_word_runs():
    blocklist = Blocklist(["lingerie model"])
    assert blocklist.find("A LINGERIE   model posing") == "lingerie model"
    assert blocklist.find("a model wearing lingerie") is None


def test_normalize_keeps_numbers_and_folds_leet_inside_words():
    assert normalize("Wow! 2024 sh!t @ss café") == ["wow", "2024", "shit", "ass", "cafe"]


def test_stage_records_the_term_and_drops_the_row(tmp_path):
    listed = tmp_path / "terms.txt"
    listed.write_text("# house list\nred balloon\n\n", encoding="utf-8")
    stage = CaptionSafetyFilter(blocklist_file=str(listed), blocklist=["gore"], use_default_list=False)
    reasons = _reasons(stage, ["a RED  balloon!", "g0re everywhere", "a dog", None, ""])
    assert reasons[0] == "caption_safety:blocked_term: caption contains 'red balloon'"
    assert reasons[1] == "caption_safety:blocked_term: caption contains 'gore'"
    assert reasons[2:] == [None, None, None]


def test_classifier_hook_scores_captions(tmp_path, monkeypatch):
    (tmp_path / "house_safety.py").write_text(
        "def score(texts):\n    return [0.9 if 'storm' in t else 0.1 for t in texts]\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    stage = CaptionSafetyFilter(classifier="house_safety:score", use_default_list=False)
    reasons = _reasons(stage, ["a storm at sea", "a calm sea", None])
    assert reasons[0] == "caption_safety:classifier: unsafe score 0.900 > 0.5" and reasons[1:] == [None, None]


def test_bad_options_fail_before_work(tmp_path):
    with pytest.raises(ValidationError, match="does not exist"):
        CaptionSafetyFilter(blocklist_file=str(tmp_path / "missing.txt"))
    with pytest.raises(ValidationError, match="cannot be imported"):
        CaptionSafetyFilter(classifier="no_such_module_xyz:score")
    with pytest.raises(ValidationError, match="module:function"):
        CaptionSafetyFilter(classifier="no_colon")


def test_default_list_spares_ordinary_captions(shared_data):
    lines = (shared_data / "text" / "coco_captions_val2017.annotations.jsonl").read_text(encoding="utf-8").splitlines()
    captions = [json.loads(line)["caption"] for line in lines]
    flagged = [r for r in _reasons(CaptionSafetyFilter(), captions) if r]
    # COCO is everyday scenes: the default list may catch a handful (it is meant to), not one in a thousand.
    assert len(captions) > 20000 and len(flagged) <= len(captions) / 1000
