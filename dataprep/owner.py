"""Which run may commit into an output: workers of a killed run can outlive it and must not commit.

Each run writes a fresh token to `_work/owner`; a worker commits a shard, a ledger
part or a lineage part only while its run's token is the current one. Checking and
writing are two steps, so a worker that checked just before a new run took over can
still land a commit; every commit record carries its token, and the next run start
removes such a superseded record wherever it doubles a key (`commit.clean_orphans`).
"""

from __future__ import annotations

import time
import uuid

from dataprep import paths, storage


class NotOwnerError(RuntimeError):
    """Another run took over this output; a worker of an older run must not commit."""


def take_ownership(output: str) -> str:
    """Make this run the only one allowed to commit into `output`; returns its token."""
    token = uuid.uuid4().hex
    storage.write_atomic(paths.under(output, f"{paths.OWNERS_DIR}/{time.time_ns():020d}-{token}"), b"")
    storage.write_atomic(paths.under(output, paths.OWNER_FILE), token.encode("ascii"))
    return token


def succession(output: str) -> dict[str | None, int]:
    """Each token that ever owned `output` -> its place in the order they took it (None: before tokens)."""
    names = [uri.rsplit("/", 1)[-1] for uri in storage.list_files(paths.under(output, paths.OWNERS_DIR))]
    order: dict[str | None, int] = {None: -1}
    order.update({name.split("-", 1)[1]: i for i, name in enumerate(sorted(names)) if "-" in name})
    return order


def assert_owner(output: str, token: str | None) -> None:
    """Raise unless the run holding `token` still owns `output` (None: an unguarded writer, as in unit tests)."""
    if token is None:
        return
    uri = paths.under(output, paths.OWNER_FILE)
    current = storage.read_bytes(uri).decode("ascii") if storage.exists(uri) else None
    if current != token:
        raise NotOwnerError(f"output {output!r} is now owned by another run; this worker's run was superseded")
