"""`caption_template`: every row's caption from one template naming an identifier token and a class.

    stages:
      - stage: caption_template          # the user's photos (DreamBooth instance prompt)
        token: sks
        class_name: person               # -> "a photo of sks person"
      - stage: caption_template          # the prior-preservation set (class prompt)
        template: "a photo of a {class_name}"
        class_name: person               # -> "a photo of a person"

DreamBooth (Ruiz et al., 2023) binds a subject to a rare identifier token by training on
"a [V] [class noun]" captions, and keeps the class's prior with "a [class noun]" captions on
generic images of the class. A caption the row already had (a sidecar .txt, a manifest column)
is kept in `caption_original` (shard member KEY.caption_original.txt); null when there was none.
"""

from __future__ import annotations

import string

import pyarrow as pa
from pydantic import Field, model_validator

from dataprep import arrow, columns
from dataprep.stage import Stage, StageParams

ORIGINAL = f"{columns.CAPTION}_original"
_FIELDS = ("token", "class_name")


class CaptionTemplateParams(StageParams):
    """Options of `caption_template`."""

    template: str = Field(
        "a photo of {token} {class_name}", description="The caption, with {token} and {class_name} filled in; the "
        "default is the DreamBooth paper's instance prompt. Prior-preservation sets use \"a photo of a {class_name}\".")
    token: str | None = Field(
        "sks", description="Identifier token of the subject: a word the text encoder knows little about, so it "
        "carries only what it learns here. 'sks' is the token of the diffusers DreamBooth examples; any rare "
        "short token works. Only read when the template names {token}.")
    class_name: str = Field(
        "person", min_length=1, description="Class noun of the subject (person, man, woman, dog); the prior set's "
        "captions must use the same one.")

    @model_validator(mode="after")
    def _fillable(self) -> CaptionTemplateParams:
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(self.template) if name is not None}
        except ValueError as exc:
            raise ValueError(f"`template` {self.template!r} is not a valid template ({exc}); "
                             "fix: name fields in braces, e.g. \"a photo of {token} {class_name}\"") from None
        unknown = sorted(names - set(_FIELDS))
        if unknown:
            raise ValueError(f"`template` names {unknown}; it may only name {{token}} and {{class_name}}")
        if "token" in names and not (self.token or "").strip():
            raise ValueError("`template` names {token} but `token` is empty; fix: set `token`, e.g. sks")
        return self

    def caption(self) -> str:
        """The caption every row gets."""
        return self.template.format(token=self.token, class_name=self.class_name)


class CaptionTemplate(Stage):
    """Sets `caption` from the template and keeps the caption a row had in `caption_original`."""

    name = "caption_template"
    writes = (columns.CAPTION, ORIGINAL)
    Params = CaptionTemplateParams
    batch_size = 1024

    def process_batch(self, batch: pa.Table) -> pa.Table:
        """One caption for every row; the previous ones move to `caption_original`."""
        # An empty caption (a blank sidecar) is no caption.
        originals = [c if c and c.strip() else None for c in arrow.column_or_none(batch, columns.CAPTION)]
        batch = arrow.put(batch, ORIGINAL, originals, pa.string())
        return arrow.put(batch, columns.CAPTION, [self.params.caption()] * batch.num_rows, pa.string())
