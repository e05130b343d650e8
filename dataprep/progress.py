"""Per-stage progress of a run: rows in, rows out and rejects so far, and the batches at work.

Workers report one count per batch (never per row) to a `Tally`, which the runner
makes a small Ray actor; the driver polls it twice a second and `ProgressView`
draws the counts on stderr. Workers also say when a batch starts and ends, so the
run's watchdog (`dataprep.liveness`) sees whether anything moves and, when nothing
does, which batch is stuck. Nothing here imports Ray: a tally is anything with
`add.remote(...)`, `begin.remote(...)` and `end.remote(...)` methods, so the
counting is unit-tested with a plain object.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pyarrow as pa

from dataprep import columns
from dataprep.plan import PlannedStage
from dataprep.stage_task import StageTask

# stage name -> [rows in, rows out, rows rejected]
Counts = dict[str, list[int]]
# Keys of a batch a stall diagnosis shows: enough to find the rows, short enough for one line.
SHOWN_KEYS = 3


@dataclass(frozen=True)
class Running:
    """A batch some worker is working on: the stage, who runs it, its first keys, for how long."""

    stage: str
    task: str  # the Ray task or actor and its process, as the worker described itself
    keys: tuple[str, ...]
    rows: int
    seconds: float


@dataclass(frozen=True)
class Pulse:
    """What the watchdog needs: a number that changes whenever a batch ends, and the oldest batches at work."""

    beats: int
    running: tuple[Running, ...]  # oldest first
    more: int = 0  # batches at work beyond those in `running`


class Tally:
    """The run's counters, summed over every worker's batches, and the batches at work now."""

    def __init__(self) -> None:
        self.counts: Counts = {}
        self.beats = 0
        # batch id -> (stage, task, keys, rows, start on this actor's clock, so no two machines' clocks meet)
        self.running: dict[str, tuple[str, str, tuple[str, ...], int, float]] = {}

    def add(self, stage: str, rows_in: int, rows_out: int, rejected: int) -> None:
        """Count one batch of `stage`."""
        total = self.counts.setdefault(stage, [0, 0, 0])
        total[0] += rows_in
        total[1] += rows_out
        total[2] += rejected
        self.beats += 1

    def snapshot(self) -> Counts:
        """The counts so far."""
        return {stage: list(c) for stage, c in self.counts.items()}

    def begin(self, batch: str, stage: str, task: str, keys: list[str], rows: int) -> None:
        """A worker (`task`) started on a batch of `stage`; `batch` names it until `end`."""
        self.running[batch] = (stage, task, tuple(keys), rows, time.monotonic())

    def end(self, batch: str) -> None:
        """The batch `batch` is done, whether it succeeded or raised."""
        self.running.pop(batch, None)
        self.beats += 1

    def pulse(self, shown: int = 3) -> Pulse:
        """The beats so far and the `shown` batches at work the longest."""
        now = time.monotonic()
        oldest = sorted(self.running.values(), key=lambda r: r[4])[:shown]
        running = tuple(Running(stage, task, keys, rows, now - start) for stage, task, keys, rows, start in oldest)
        return Pulse(self.beats, running, max(0, len(self.running) - shown))


@contextlib.contextmanager
def at_work(tally: Any, stage: str, batch: pa.Table, task: Callable[[], str] | None) -> Iterator[None]:
    """Tell `tally` that this worker (described by `task()`) works on `batch` of `stage` until the block ends.

    With no tally or no `task`, tells nothing. A batch that raises ends too: it is not stuck, and Ray may retry it.
    """
    if tally is None or task is None:
        yield
        return
    batch_id = uuid.uuid4().hex
    keys = batch.column(columns.KEY).slice(0, SHOWN_KEYS).to_pylist() if columns.KEY in batch.column_names else []
    tally.begin.remote(batch_id, stage, task(), keys, batch.num_rows)
    try:
        yield
    finally:
        tally.end.remote(batch_id)


def report(tally: Any, stage: str, rows_in: int, rows_out: int, rejected: int) -> None:
    """Send one batch's counts to `tally` without waiting for an answer; None counts nothing."""
    if tally is not None and rows_in:
        tally.add.remote(stage, rows_in, rows_out, rejected)


class CountedStageTask(StageTask):
    """A `StageTask` that reports each batch's rows in, out and rejected to a tally.

    With `task` (a function describing the worker it runs in), it also reports when each
    batch starts and ends (`at_work`), for the run's watchdog.
    """

    def __init__(self, planned: PlannedStage, output: str, token: str | None = None, tally: Any = None,
                 task: Callable[[], str] | None = None) -> None:
        super().__init__(planned, output, token)
        self.tally = tally
        self.task = task
        self._rejected = 0

    def record(self, rejected: pa.Table) -> None:
        """Write rejected rows to the ledger and count them."""
        self._rejected += rejected.num_rows
        super().record(rejected)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Process one batch and report its counts."""
        self._rejected = 0
        with at_work(self.tally, self.planned.name, batch, self.task):
            kept = super().__call__(batch)
        report(self.tally, self.planned.name, batch.num_rows, kept.num_rows, self._rejected)
        return kept


class ProgressView:
    """Draws per-stage counts on stderr while a run works, from `poll()` twice a second.

    On a terminal the table is redrawn in place and removed at the end (the summary
    follows); elsewhere (a log file, CI) a line per stage that moved, every `log_every` seconds.
    """

    def __init__(self, stages: list[str], total: int, poll: Callable[[], Counts], *,
                 interval: float = 0.5, log_every: float = 10.0) -> None:
        from rich.console import Console

        self.stages = stages
        self.total = total
        self.poll = poll
        self.interval = interval
        self.log_every = log_every
        self.console = Console(stderr=True)
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._counts: Counts = {}

    def table(self) -> Any:
        """The counts as a rich table."""
        from rich.table import Table

        elapsed = time.monotonic() - self._start
        table = Table(title=f"running  {elapsed:.0f} s", title_justify="left")
        for name in ("stage", "in", "out", "rejected"):
            table.add_column(name, justify="left" if name == "stage" else "right")
        for i, stage in enumerate(self.stages):
            rows_in, rows_out, rejected = self._counts.get(stage, (0, 0, 0))
            # Only the first stage's input is known up front; later ones depend on filters and splits.
            seen = f"{rows_in}/{self.total}" if i == 0 else str(rows_in)
            table.add_row(stage, seen, str(rows_out), str(rejected))
        return table

    def lines(self) -> list[str]:
        """The counts as plain lines, for output that is not a terminal."""
        return [f"{stage}: in {c[0]}, out {c[1]}, rejected {c[2]}"
                for stage in self.stages if (c := self._counts.get(stage))]

    def __enter__(self) -> ProgressView:
        self._thread = threading.Thread(target=self._loop, name="dataprep-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _refresh(self) -> None:
        try:
            self._counts = self.poll()
        except Exception:  # noqa: BLE001 - a missed poll only delays the display; the run goes on
            return

    def _loop(self) -> None:
        if self.console.is_terminal:
            from rich.live import Live

            with Live(self.table(), console=self.console, transient=True, auto_refresh=False) as live:
                while not self._stop.wait(self.interval):
                    self._refresh()
                    live.update(self.table(), refresh=True)
            return
        last, shown = time.monotonic(), self.lines()
        while not self._stop.wait(self.interval):
            if time.monotonic() - last >= self.log_every:
                last = time.monotonic()
                self._refresh()
                # Only what moved: a log must not repeat every stage every few seconds.
                lines = self.lines()
                for line in (line for line in lines if line not in shown):
                    self.console.print(line, highlight=False)
                shown = lines
