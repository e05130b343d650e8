"""The `dataprep` command line: run, submit, status, logs, stop, validate, stages, stats, inspect, sample-data.

    dataprep sample-data sample/ && dataprep run configs/quickstart.yaml --input sample/ --output out/

Heavy modules (Ray, pyarrow, torch) are imported inside the commands that use
them, so `dataprep --help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from dataprep.cli_stats import add_stats_command

# Entry-point group of extra subcommands: each names a function that adds its parser to the subparsers.
COMMANDS_GROUP = "dataprep.commands"


def _load_plan(args: argparse.Namespace):  # noqa: ANN202 - Plan is imported lazily
    from dataprep.config import load_config
    from dataprep.plan import build_plan

    config = load_config(args.config, input=args.input, output=args.output)
    return build_plan(config)


def cmd_validate(args: argparse.Namespace) -> int:
    """Check a config without running it."""
    plan = _load_plan(args)
    print(f"ok: {len(plan.all_stages)} stages, input {plan.config.input}, output {plan.config.output}")
    for p in plan.all_stages:
        print(f"  {p.index:2d}. {p.name:<16} reads {', '.join(p.reads) or '-'}; writes {', '.join(p.writes) or '-'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run a job on embedded Ray or on a cluster."""
    from dataprep.cli_tables import print_summary
    from dataprep.runner import run_plan

    plan = _load_plan(args)
    result = run_plan(plan, address=args.address, progress=not args.quiet)
    print_summary(result.summary, title=f"{plan.config.output}  ({result.new_rows} new rows, {result.wall_seconds:.1f} s)")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """Validate a config here, then run it as a Ray job on a cluster."""
    from dataprep import submit

    _load_plan(args)
    job_id = submit.submit(args.config, address=args.address, input=args.input, output=args.output)
    print(job_id)
    if not args.wait:
        return 0
    state = submit.wait(job_id, address=args.address)
    print(submit.logs(job_id, address=args.address), end="")
    print(f"job {job_id}: {state}")
    return 0 if state == "SUCCEEDED" else 1


def cmd_job(args: argparse.Namespace) -> int:
    """status, logs or stop of a submitted job."""
    from dataprep import submit

    if args.command == "status":
        print(submit.status(args.job_id, address=args.address))
    elif args.command == "logs":
        print(submit.logs(args.job_id, address=args.address), end="")
    else:
        print("stopped" if submit.stop(args.job_id, address=args.address) else "not running")
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    """List the stages that configs can name."""
    from dataprep.cli_tables import describe_stages, stages_markdown, stages_table
    from dataprep.registry import Registry

    rows = describe_stages(Registry(args.plugin or ()))
    if args.json:
        print(json.dumps(rows, indent=1))
    elif args.markdown:
        print(stages_markdown(rows))
    else:
        stages_table(rows)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Show the samples of a shard, or one sample."""
    from dataprep.shard_view import sample_detail, shard_listing

    if not args.key:
        samples = shard_listing(args.shard)
        print(f"{args.shard}: {len(samples)} samples")
        for s in samples:
            files = ", ".join(f"{ext} {size} B" for ext, size in s["files"].items())
            print(f"  {s['key']}: {files}  {s['caption'][:60]!r}")
        return 0
    detail = sample_detail(args.shard, args.key)
    if detail is None:
        print(f"error: no sample with key {args.key!r} in {args.shard}; run `dataprep inspect {args.shard}` to list keys")
        return 2
    print(json.dumps(detail, indent=1, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(prog="dataprep", description="Prepare video and image training data on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", help="job config YAML")
        p.add_argument("--input", help="override the config's `input`")
        p.add_argument("--output", help="override the config's `output`")

    p = sub.add_parser("run", help="run a job (embedded Ray unless --address)")
    with_config(p)
    p.add_argument("--address", help="Ray cluster address (e.g. ray://HEAD:10001 or auto); default: embedded Ray")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("submit", help="run a job on a Ray cluster through its Jobs API")
    with_config(p)
    p.add_argument("--address", required=True, help="the head's dashboard, e.g. http://HEAD:8265")
    p.add_argument("--wait", action="store_true", help="wait for the job to end and print its logs")
    p.set_defaults(func=cmd_submit)

    for name, text in (("status", "state of a submitted job"), ("logs", "logs of a submitted job"),
                       ("stop", "stop a submitted job")):
        p = sub.add_parser(name, help=text)
        p.add_argument("job_id")
        p.add_argument("--address", required=True, help="the head's dashboard, e.g. http://HEAD:8265")
        p.set_defaults(func=cmd_job)

    p = sub.add_parser("validate", help="check a config and its stage plan without running")
    with_config(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("stages", help="list available stages and their options")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--markdown", action="store_true")
    p.add_argument("--plugin", action="append", help="also import this plugin module")
    p.set_defaults(func=cmd_stages)

    add_stats_command(sub)

    p = sub.add_parser("inspect", help="list a shard's samples, or show one")
    p.add_argument("shard")
    p.add_argument("key", nargs="?")
    p.set_defaults(func=cmd_inspect)

    # Commands of installed packages (the built-in `sample-data` among them): the core knows none by name.
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dataprep` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from dataprep.errors import ConfigError, FatalStageError

    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FatalStageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
