"""Which job an output folder belongs to: its config fingerprint, kept in `_work/job.json`.

Two different jobs mixed in one output would break exactly-once (keys depend on the
config), so a run into a folder that holds another config's output is refused, and
the refusal names the fields that differ.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from dataprep import paths, storage
from dataprep.config import normalize_input
from dataprep.errors import ConfigError
from dataprep.plan import Plan

# Differences named in a refusal; more would bury the first one, which is usually the cause.
SHOWN_DIFFERENCES = 3
# A key or list item that one of two compared documents lacks.
_UNSET = object()


def fingerprint(plan: Plan) -> dict[str, Any]:
    """What decides the keys and contents of an output: input, stages and sink, not how Ray runs."""
    config = plan.config.model_dump(mode="json", exclude={"ray", "output"})
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode("utf-8")).hexdigest()
    return {"sha256": digest, "config": config}


def differences(old: Any, new: Any, where: str = "") -> list[str]:
    """`path: old -> new` for each value two JSON documents disagree on, in `new`'s order."""
    if isinstance(old, dict) and isinstance(new, dict):
        names = [*new, *(k for k in old if k not in new)]
        pairs = [(f"{where}.{k}" if where else str(k), old.get(k, _UNSET), new.get(k, _UNSET)) for k in names]
    elif isinstance(old, list) and isinstance(new, list):
        pairs = [(f"{where}[{i}]", old[i] if i < len(old) else _UNSET, new[i] if i < len(new) else _UNSET)
                 for i in range(max(len(old), len(new)))]
    else:
        return [] if old == new else [f"{where or 'config'}: {_shown(old)} -> {_shown(new)}"]
    return [found for path, a, b in pairs for found in differences(a, b, path)]


def _shown(value: Any) -> str:
    text = "(not set)" if value is _UNSET else json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _recorded(output: str) -> dict[str, Any] | None:
    uri = paths.under(output, paths.JOB_FILE)
    return json.loads(storage.read_bytes(uri)) if storage.exists(uri) else None


def _refuse_if_foreign(plan: Plan, theirs: dict[str, Any]) -> None:
    old_input = theirs.get("config", {}).get("input")
    my_input = plan.config.input
    if isinstance(old_input, str) and old_input != my_input and normalize_input(old_input) == my_input:
        # An output written before inputs were normalized keyed its rows by the input as spelled then;
        # listing it the same way keeps those keys, so the rerun resumes instead of redoing every row.
        plan.config.input = old_input
    mine = fingerprint(plan)
    if theirs.get("sha256") == mine["sha256"]:
        return
    found = differences(theirs.get("config", {}), mine["config"])
    shown = "; ".join(found[:SHOWN_DIFFERENCES]) + (f"; and {len(found) - SHOWN_DIFFERENCES} more"
                                                     if len(found) > SHOWN_DIFFERENCES else "")
    raise ConfigError([
        f"`output` {plan.config.output!r} holds the output of a job with a different config "
        f"({shown or 'its fingerprint differs'}); fix: choose a new --output, change the config back, "
        "or delete that folder to start over"
    ])


def check_same_job(plan: Plan) -> None:
    """Raise ConfigError when `plan`'s output folder holds another config's output; writes nothing."""
    theirs = _recorded(plan.config.output)
    if theirs is not None:
        _refuse_if_foreign(plan, theirs)


def check_output(plan: Plan) -> None:
    """Refuse to mix two different jobs in one output folder; record this job's fingerprint."""
    theirs = _recorded(plan.config.output)
    if theirs is not None:
        _refuse_if_foreign(plan, theirs)
        return
    uri = paths.under(plan.config.output, paths.JOB_FILE)
    storage.write_atomic(uri, json.dumps(fingerprint(plan), indent=1, sort_keys=True).encode("utf-8"))
