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
