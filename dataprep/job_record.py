"""Which job an output folder belongs to: its config fingerprint, kept in `_work/job.json`.

Two different jobs mixed in one output would break exactly-once (keys depend on the
config), so a run into a folder that holds another config's output is refused.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from dataprep import paths, storage
from dataprep.errors import ConfigError
from dataprep.plan import Plan


def fingerprint(plan: Plan) -> dict[str, Any]:
    """What decides the keys and contents of an output: input, stages and sink, not how Ray runs."""
    config = plan.config.model_dump(mode="json", exclude={"ray", "output"})
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode("utf-8")).hexdigest()
    return {"sha256": digest, "config": config}


def check_output(plan: Plan) -> None:
    """Refuse to mix two different jobs in one output folder; record this job's fingerprint."""
    uri = paths.under(plan.config.output, paths.JOB_FILE)
    mine = fingerprint(plan)
    if storage.exists(uri):
        theirs = json.loads(storage.read_bytes(uri))
        if theirs.get("sha256") != mine["sha256"]:
            raise ConfigError(
                [
                    f"`output` {plan.config.output!r} holds the output of a job with a different config "
                    "(input, stages or sink differ); fix: choose a new --output, or delete that folder to start over"
                ]
            )
        return
    storage.write_atomic(uri, json.dumps(mine, indent=1, sort_keys=True).encode("utf-8"))
