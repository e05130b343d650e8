"""Running one stage on one batch: error isolation, filter decisions and the ledger.

`StageTask` is what the runner hands to `map_batches`; it is plain Python, so the
same wrapping is unit-tested without Ray.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataprep import columns, commit, ledger
from dataprep.errors import row_error
from dataprep.plan import PlannedStage
from dataprep.stage import Filter, Stage

log = logging.getLogger(__name__)


def ensure_reject_column(batch: pa.Table) -> pa.Table:
    """`batch` with a `_reject` string column (all null when it had none)."""
    if columns.REJECT in batch.column_names:
        return batch
    return batch.append_column(columns.REJECT, pa.nulls(batch.num_rows, pa.string()))


def set_rejects(batch: pa.Table, reasons: list[str | None]) -> pa.Table:
    """Merge new reasons into `_reject`; an earlier reason on a row wins."""
    batch = ensure_reject_column(batch)
    old = batch.column(columns.REJECT).to_pylist()
    merged = [o if o is not None else r for o, r in zip(old, reasons, strict=True)]
    index = batch.schema.get_field_index(columns.REJECT)
    return batch.set_column(index, columns.REJECT, pa.array(merged, type=pa.string()))


def sanitize_keys(batch: pa.Table) -> pa.Table:
    """Replace keys that could escape a shard or confuse readers with safe ones."""
    keys = batch.column(columns.KEY).to_pylist()
    safe = [columns.safe_key(k) if k is not None else None for k in keys]
    if safe == keys:
        return batch
    index = batch.schema.get_field_index(columns.KEY)
    return batch.set_column(index, columns.KEY, pa.array(safe, type=pa.string()))


def split_rejects(batch: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(kept rows without `_reject`, rejected rows)."""
    if columns.REJECT not in batch.column_names:
        return batch, batch.slice(0, 0)
    rejected_mask = pc.is_valid(batch.column(columns.REJECT))
    kept = batch.filter(pc.invert(rejected_mask)).drop_columns([columns.REJECT])
    for name in (columns.DUPLICATE_OF,):
        if name in kept.column_names:
            kept = kept.drop_columns([name])
    return kept, batch.filter(rejected_mask)


def record_rejects(rejected: pa.Table, planned: PlannedStage, output: str, *, token: str | None = None) -> None:
    """Write rejected rows to the ledger, with the stage's score columns."""
    if rejected.num_rows == 0:
        return
    table = ledger.rejects_table(rejected, stage=planned.name, stage_index=planned.index,
                                 score_columns=planned.score_columns)
    ledger.write_part(output, table, token=token)


class StageTask:
    """Callable for `map_batches`: runs a stage, records rejections, returns the rows that go on."""

    def __init__(self, planned: PlannedStage, output: str, token: str | None = None) -> None:
        self.planned = planned
        self.output = output
        self.token = token
        self.stage: Stage = planned.instantiate()
        self._ready = False

    def _setup(self) -> None:
        if not self._ready:
            self.stage.setup()
            self._ready = True

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Process one batch; rejected rows go to the ledger and leave the stream."""
        self._setup()
        if batch.num_rows == 0:
            return batch
        out = self._process(batch)
        if self.stage.expands:
            out = self._account_expansion(batch, out)
        if isinstance(self.stage, Filter):
            out = self._decide(out)
        if columns.KEY in self.stage.writes and columns.KEY in out.column_names:
            out = sanitize_keys(out)
        kept, rejected = split_rejects(out)
        self.record(rejected)
        return kept

    def record(self, rejected: pa.Table) -> None:
        """Write rejected rows to the ledger."""
        record_rejects(rejected, self.planned, self.output, token=self.token)

    def _account_expansion(self, batch: pa.Table, out: pa.Table) -> pa.Table:
        """Record parent -> children, and reject inputs that produced no row at all."""
        out_keys = out.column(columns.KEY).to_pylist()
        parents = out.column(columns.PARENT).to_pylist() if columns.PARENT in out.column_names else [None] * len(out_keys)
        children: dict[str, list[str]] = {}
        for key, parent in zip(out_keys, parents, strict=True):
            if parent is not None and parent != key:
                children.setdefault(parent, []).append(key)
        commit.write_lineage(self.output, list(children), list(children.values()))
        covered = set(out_keys) | set(children)
        lost = [i for i, k in enumerate(batch.column(columns.KEY).to_pylist()) if k not in covered]
        if not lost:
            return out
        missing = batch.take(pa.array(lost))
        missing = set_rejects(missing, [f"{self.planned.name}:produced no rows"] * missing.num_rows)
        return pa.concat_tables([ensure_reject_column(out), missing], promote_options="permissive")

    def _process(self, batch: pa.Table) -> pa.Table:
        try:
            return self.stage.process_batch(batch)
        except Exception as exc:
            if batch.num_rows == 1:
                return set_rejects(batch, [row_error(exc)])
            log.warning("stage %s failed on a batch (%s); retrying row by row", self.planned.name, exc)
        parts = [self._process(batch.slice(i, 1)) for i in range(batch.num_rows)]
        return pa.concat_tables([ensure_reject_column(p) for p in parts], promote_options="permissive")

    def _decide(self, batch: pa.Table) -> pa.Table:
        assert isinstance(self.stage, Filter)
        batch = ensure_reject_column(batch)
        pending = np.flatnonzero(pc.is_null(batch.column(columns.REJECT)).to_numpy(zero_copy_only=False))
        if len(pending) == 0:
            return batch
        subset = batch.take(pa.array(pending))
        try:
            mask, reasons = self.stage.keep(subset)
        except Exception as exc:
            mask, reasons = np.zeros(len(pending), dtype=bool), [row_error(exc)] * len(pending)
        mask = np.asarray(mask, dtype=bool)
        if len(mask) != len(pending) or len(reasons) != len(pending):
            raise ValueError(
                f"filter {self.planned.name!r}: keep() returned {len(mask)} decisions for {len(pending)} rows"
            )
        final: list[str | None] = [None] * batch.num_rows
        for row, keep, reason in zip(pending, mask, reasons, strict=True):
            if not keep:
                final[row] = reason or f"{self.planned.name}:rejected"
        return set_rejects(batch, final)
