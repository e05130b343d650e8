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
from dataprep.arrow import column_or_none, concat, ensure_reject_column, put, set_rejects, split_rejects
from dataprep.errors import FatalStageError, row_error
from dataprep.plan import PlannedStage
from dataprep.stage import Filter, Stage

log = logging.getLogger(__name__)


def sanitize_keys(batch: pa.Table) -> pa.Table:
    """Replace keys that could escape a shard or confuse readers with safe ones."""
    # Checked column-wise first: a listing of millions of rows has few keys, if any, that need a look.
    if not pc.any(pc.invert(pc.match_substring_regex(batch.column(columns.KEY), columns.SAFE_KEY))).as_py():
        return batch
    keys = batch.column(columns.KEY).to_pylist()
    safe = [columns.safe_key(k) if k is not None else None for k in keys]
    if safe == keys:
        return batch
    return put(batch, columns.KEY, safe, pa.string())


def record_rejects(rejected: pa.Table, planned: PlannedStage, output: str, *, token: str | None = None) -> None:
    """Write rejected rows to the ledger, with the stage's score columns."""
    if rejected.num_rows == 0:
        return
    table = ledger.rejects_table(rejected, stage=planned.name, stage_index=planned.index,
                                 score_columns=planned.score_columns)
    ledger.write_part(output, table, token=token)


class StageTask:
    """Callable for `map_batches`: runs a stage, records rejections, returns the rows that go on.

    Under an actor pool one instance lives as long as its actor: the stage's `setup()`
    runs when the actor starts (so loading a model is not billed to the first batch)
    and `teardown()` when it ends.
    """

    _open = False  # until setup() succeeded there is nothing to tear down

    def __init__(self, planned: PlannedStage, output: str, token: str | None = None) -> None:
        self.planned = planned
        self.output = output
        self.token = token
        self.stage: Stage = planned.instantiate()
        self._guard(self.stage.setup)
        self._open = True

    def close(self) -> None:
        """Run the stage's `teardown()` once."""
        if self._open:
            self._open = False
            self.stage.teardown()

    def __del__(self) -> None:
        # Ray Data drops the callable when an actor exits gracefully; that is the end of the worker.
        self.close()

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Process one batch; rejected rows go to the ledger and leave the stream."""
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

    def _guard(self, fn, *args):  # noqa: ANN001, ANN202 - any stage method
        """Call a stage method; an exception the stage declares fatal becomes `FatalStageError`."""
        try:
            return fn(*args)
        except FatalStageError:
            raise
        except Exception as exc:
            if self.stage.is_fatal(exc):
                raise FatalStageError.of(self.planned.name, exc) from exc
            raise

    def _account_expansion(self, batch: pa.Table, out: pa.Table) -> pa.Table:
        """Record parent -> children, and reject inputs that produced no row at all."""
        out_keys = out.column(columns.KEY).to_pylist()
        parents = column_or_none(out, columns.PARENT)
        inputs = set(batch.column(columns.KEY).to_pylist())
        children: dict[str, list[str]] = {}
        for key, parent in zip(out_keys, parents, strict=True):
            # Only rows this stage made from a row of this batch: a row passed through keeps the parent an
            # earlier split gave it, and recording it here would claim that parent has no other children.
            if parent in inputs and parent != key:
                children.setdefault(parent, []).append(key)
        commit.write_lineage(self.output, list(children), list(children.values()), token=self.token)
        covered = set(out_keys) | set(children)
        lost = [i for i, k in enumerate(batch.column(columns.KEY).to_pylist()) if k not in covered]
        if not lost:
            return out
        missing = batch.take(pa.array(lost))
        missing = set_rejects(missing, [f"{self.planned.name}:produced no rows"] * missing.num_rows)
        return concat([ensure_reject_column(out), missing])

    def _process(self, batch: pa.Table) -> pa.Table:
        try:
            return self._guard(self.stage.process_batch, batch)
        except FatalStageError:
            raise
        except Exception as exc:
            if batch.num_rows == 1:
                return set_rejects(ensure_reject_column(batch), [row_error(exc)])
            log.warning("stage %s failed on a batch (%s); retrying row by row", self.planned.name, exc)
        return concat([ensure_reject_column(self._process(batch.slice(i, 1))) for i in range(batch.num_rows)])

    def _decide(self, batch: pa.Table) -> pa.Table:
        assert isinstance(self.stage, Filter)
        batch = ensure_reject_column(batch)
        pending = np.flatnonzero(pc.is_null(batch.column(columns.REJECT)).to_numpy(zero_copy_only=False))
        if len(pending) == 0:
            return batch
        # Usually no row was rejected yet: the filter then reads the batch itself, not a copy of its rows.
        subset = batch if len(pending) == batch.num_rows else batch.take(pa.array(pending))
        try:
            reasons = list(self._guard(self.stage.reasons, subset))
        except FatalStageError:
            raise
        except Exception as exc:
            reasons = [row_error(exc)] * len(pending)
        if len(reasons) != len(pending):
            raise ValueError(
                f"filter {self.planned.name!r}: reasons() returned {len(reasons)} reasons for {len(pending)} rows"
            )
        final: list[str | None] = [None] * batch.num_rows
        for row, reason in zip(pending, reasons, strict=True):
            final[row] = None if reason is None else (reason or f"{self.planned.name}:rejected")
        return set_rejects(batch, final)
