"""Ray job entrypoint: what runs on the cluster when `dataprep submit` sends a job.

    python -m dataprep.jobs.run_job job.yaml [--input URI] [--output URI]

It joins the cluster it runs on (address "auto") and runs the same plan as
`dataprep run`; the summary is printed as JSON on the last line of the job's log.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run one job config on the current Ray cluster."""
    from dataprep.config import load_config
    from dataprep.errors import ConfigError
    from dataprep.plan import build_plan
    from dataprep.runner import run_plan

    parser = argparse.ArgumentParser(prog="python -m dataprep.jobs.run_job")
    parser.add_argument("config")
    parser.add_argument("--input")
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        plan = build_plan(load_config(args.config, input=args.input, output=args.output))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = run_plan(plan, address="auto", progress=False)
    print(json.dumps({"output": result.output, "new_rows": result.new_rows, "totals": result.summary["totals"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
