"""`caption_safety`: drop rows whose caption contains a blocked word or phrase, or that a classifier flags.

    stages:
      - stage: caption_safety
        blocklist_file: lists/blocked_terms.txt   # one word or phrase a line, # comments
        blocklist: [extra term, another phrase]
        classifier: mypackage.text_safety:score   # optional: fn(list[str]) -> list[float] in [0, 1]
        max_classifier_score: 0.5

Matching is on whole words after folding case, accents, look-alike letters of other scripts and
leetspeak (see `blocklist.py`), so `Sc3nic` or `Ѕ E X` are caught and `Scunthorpe` or `cocktail` are not.
The built-in list (`use_default_list`) holds unambiguous sexual terms only; extend it for your data.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field, field_validator

from dataprep import arrow, columns
from dataprep.stage import Filter, StageParams
from dataprep.stages.safety.blocklist import Blocklist

# Terms whose only common meaning in a caption is sexual content; words with ordinary senses
# ("breast" of chicken, "strip" of land) stay out, so the default drops little that is safe.
DEFAULT_TERMS = (
    "porn", "porno", "pornographic", "pornography", "xxx", "nsfw", "nude", "nudes", "naked", "nudity",
    "topless", "sex", "sexual intercourse", "blowjob", "handjob", "cumshot", "hentai", "erotic", "erotica",
    "fetish", "bdsm", "masturbation", "masturbating", "orgasm", "orgy", "genitals", "genitalia", "penis",
    "vagina", "dildo", "camgirl", "onlyfans", "milf", "stripper", "lingerie model", "upskirt",
)
_FIELDS = pa.schema([("caption_blocked_term", pa.string()), ("caption_unsafe_score", pa.float64())])
Classifier = Callable[[list[str]], list[float]]


class CaptionSafetyParams(StageParams):
    """Options of `caption_safety`."""

    text_column: str = Field("caption", description="Column holding the text to check.")
    use_default_list: bool = Field(
        True, description="Include the built-in list of unambiguous sexual terms (see DEFAULT_TERMS).")
    blocklist: list[str] = Field(default_factory=list, description="More words or phrases to block.")
    blocklist_file: str | None = Field(
        None, description="A text file of terms, one a line (blank lines and `#` comments skipped), "
        "e.g. a copy of the LDNOOBW list.")
    classifier: str | None = Field(
        None, description="`module:function` scoring a list of captions with unsafe probabilities in [0, 1] "
        "(a text classifier of your choice); None: the blocklist only.")
    max_classifier_score: float = Field(
        0.5, ge=0, le=1, description="Rows the classifier scores above this are dropped; 0.5: its decision.")

    @field_validator("blocklist_file")
    @classmethod
    def _readable(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).expanduser().is_file():
            raise ValueError(f"blocklist file {value!r} does not exist; fix: give a text file of terms, one a line")
        return value

    @field_validator("classifier")
    @classmethod
    def _importable(cls, value: str | None) -> str | None:
        if value is not None:
            _load_classifier(value)
        return value


def _load_classifier(spec: str) -> Classifier:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"classifier {spec!r} must be `module:function`, e.g. mypackage.safety:score")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"classifier {spec!r} cannot be imported ({exc}); fix: install its package or fix the name") \
            from None
    if not callable(fn):
        raise ValueError(f"classifier {spec!r} is not callable")
    return fn


def _terms(params: CaptionSafetyParams) -> list[str]:
    terms = list(DEFAULT_TERMS) if params.use_default_list else []
    terms += params.blocklist
    if params.blocklist_file:
        lines = Path(params.blocklist_file).expanduser().read_text(encoding="utf-8").splitlines()
        terms += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return terms


class CaptionSafetyFilter(Filter):
    """Drops rows whose caption contains a blocked term, or scores unsafe with the configured classifier."""

    name = "caption_safety"
    reads = (columns.CAPTION,)
    writes = ("caption_blocked_term", "caption_unsafe_score")
    Params = CaptionSafetyParams
    batch_size = 256

    def __init__(self, params: StageParams | None = None, **options: Any) -> None:
        super().__init__(params, **options)
        self.reads = (self.params.text_column,)
        self._blocklist: Blocklist | None = None
        self._classifier: Classifier | None = None

    def setup(self) -> None:
        """Build the normalized blocklist and import the classifier once per worker."""
        self._blocklist = Blocklist(_terms(self.params))
        if self.params.classifier:
            self._classifier = _load_classifier(self.params.classifier)

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """Add the matched term and the classifier's score of every row."""
        if self._blocklist is None:
            self.setup()
        texts = batch.column(self.params.text_column).to_pylist()
        blocked = [self._blocklist.find(t) for t in texts]
        scores: list[float | None] = [None] * len(texts)
        if self._classifier is not None:
            todo = [i for i, t in enumerate(texts) if t]
            if todo:
                got = list(self._classifier([texts[i] for i in todo]))
                if len(got) != len(todo):
                    raise ValueError(f"classifier {self.params.classifier!r} returned {len(got)} scores "
                                     f"for {len(todo)} captions")
                for i, score in zip(todo, got, strict=True):
                    scores[i] = float(score)
        for field, values in zip(_FIELDS, (blocked, scores), strict=True):
            batch = arrow.put(batch, field.name, values, field.type)
        return batch

    def reasons(self, batch: pa.Table) -> list[str | None]:
        """A blocked term, else a classifier score above the limit, is the reason."""
        limit = self.params.max_classifier_score
        return [
            f"caption_safety:blocked_term: caption contains {term!r}" if term is not None
            else f"caption_safety:classifier: unsafe score {score:.3f} > {limit}" if score is not None and score > limit
            else None
            for term, score in zip(batch.column("caption_blocked_term").to_pylist(),
                                   batch.column("caption_unsafe_score").to_pylist(), strict=True)
        ]
