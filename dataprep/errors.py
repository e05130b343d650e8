"""Errors that tell the user what to change."""

from __future__ import annotations


class ConfigError(ValueError):
    """A job config is invalid; raised before any work starts."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid config:\n" + "\n".join(f"  - {p}" for p in problems))


def row_error(exc: BaseException) -> str:
    """The ledger reason for a row that raised: `error:<ExceptionType>: message`."""
    message = " ".join(str(exc).split())[:500]
    return f"error:{type(exc).__name__}: {message}" if message else f"error:{type(exc).__name__}"


class Rejected(Exception):
    """Raised for one row to reject it with exactly this reason (`code:detail`), not as an `error:`."""


class FatalStageError(RuntimeError):
    """A stage raised an exception it declares fatal (a lost GPU): the job stops instead of rejecting rows."""

    @classmethod
    def of(cls, stage: str, exc: BaseException) -> FatalStageError:
        """The error for `exc` raised by `stage`."""
        return cls(f"stage {stage!r} failed fatally: {type(exc).__name__}: {exc}; "
                   "rerun the same command to resume once the cause is fixed")

    @classmethod
    def find(cls, exc: BaseException) -> FatalStageError | None:
        """The fatal error behind `exc`, raised here or on a worker.

        Ray Data wraps a worker's exception in its own and keeps only its traceback as text,
        so the message is also looked for in the text of each exception of the chain.
        """
        import re

        pattern = re.compile(rf"{re.escape(cls.__module__)}\.{cls.__name__}: (.+)")
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            if isinstance(current, cls):
                return current
            found = pattern.search(str(current))
            if found:
                return cls(found.group(1).strip())
            current = current.__cause__ or current.__context__
        return None
