"""Knowing that a rerun has nothing to do without listing its input again.

    state = noop.current(plan)               # before the input is listed
    ...                                      # list, read what is committed, anti-join: nothing to do
    noop.remember(plan, state)               # the same state still: the fact is written down
    noop.known(plan, noop.current(plan))     # in a later run: True when nothing changed since

Which rows a run has to do is a function of its input file's content, its config, and the
files that say what is committed (shard stats, manifest parts, ledger and lineage parts).
Each of these has a version (`storage.version`: size, mtime and inode of a local file,
size and ETag of an object). A run that found nothing to do, no rejection at the source,
no key committed twice and nothing left over by a killed run records those versions in
`_work/noop.json`; a later run that finds every version the same would find nothing to do
again, and skips listing. Only what was computed is recorded: a run that did work does not
claim it finished everything. A folder or prefix input has no version short of its whole
listing, so it is always listed.
"""

from __future__ import annotations

import json
import time
from typing import Any

import dataprep
from dataprep import commit, job_record, paths, storage
from dataprep.plan import Plan

# Seconds within which a file's modification time does not prove it unchanged: a rewrite in the same
# tick of the filesystem's clock, of the same size, in place (same inode), would keep its version.
RACY_SECONDS = 2.0
# The folders whose files decide what is committed (`dataprep.resume` reads them).
_RECORD_FOLDERS = (paths.SHARDS_DIR, paths.MANIFEST_PARTS_DIR, paths.LEDGER_PARTS_DIR, paths.LINEAGE_DIR)


def current(plan: Plan) -> dict[str, Any] | None:
    """The versions that decide what `plan` has to do; None when its input has no version (a folder)."""
    found = storage.version(plan.config.input)
    if found is None:
        return None
    output = plan.config.output
    records: dict[str, tuple[str, float]] = {}
    for folder in _RECORD_FOLDERS:
        listed = storage.list_versions(paths.under(output, folder))
        records.update({u: v for u, v in listed.items() if not u.endswith(".tar")})
    return {"dataprep": dataprep.__version__, "job": job_record.fingerprint(plan)["sha256"], "input": found,
            "records": dict(sorted(records.items()))}


def _comparable(state: dict[str, Any]) -> str:
    """The state without modification times, as text: what must be equal between two runs."""
    tags = {"input": state["input"][0], "records": {u: v[0] for u, v in state["records"].items()}}
    return json.dumps({"dataprep": state["dataprep"], "job": state["job"], **tags}, sort_keys=True)


def remember(plan: Plan, before: dict[str, Any] | None) -> bool:
    """Record that `plan` has nothing to do, when the state `before` its listing is still the state now and
    no file in it was written too recently to tell by its version; returns whether it was recorded."""
    if before is None:
        return False
    now = current(plan)
    if now is None or _comparable(now) != _comparable(before):
        return False
    newest = max([now["input"][1], *(v[1] for v in now["records"].values())])
    if time.time() - newest < RACY_SECONDS:
        return False
    storage.write_atomic(paths.under(plan.config.output, paths.NOOP_STATE), _comparable(now).encode("utf-8"))
    return True


def known(plan: Plan, state: dict[str, Any] | None) -> bool:
    """Whether a previous run recorded that `plan` has nothing to do in `state` (`current`'s, now), and no killed
    run left files behind since (a run must clean them up)."""
    uri = paths.under(plan.config.output, paths.NOOP_STATE)
    if state is None or not storage.exists(uri) or storage.read_bytes(uri).decode("utf-8") != _comparable(state):
        return False
    return not commit.has_orphans(plan.config.output, superseded=False)
