"""The `dataprep` command line: run, submit, status, logs, stop, validate, stages, stats, inspect, sample-data.

    dataprep sample-data sample/ && dataprep run configs/quickstart.yaml --input sample/ --output out/

Heavy modules (Ray, pyarrow, torch) are imported inside the commands that use
them, so `dataprep --help` answers at once. A user's mistake ends in one
`error: ...` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from dataprep.cli_stats import add_stats_command

# Entry-point group of extra subcommands: each names a function that adds its parser to the subparsers.
COMMANDS_GROUP = "dataprep.commands"
# Exit status of a command stopped by Ctrl-C, as shells report it (128 + SIGINT).
INTERRUPTED = 130
RUN_ADDRESS_HELP = ("the Ray cluster this driver joins, as ray.init takes it: auto, HEAD:6379 or ray://HEAD:10001; "
                    "default: embedded Ray on this machine")
# Tiny models are built once per machine and reused; the folder is local, so --tiny-models is for runs on this machine.
TINY_MODELS_DIR = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "dataprep", "tiny-models")
TINY_MODELS_HELP = ("swap every model the config names for a tiny random one of the same family (built under "
                    f"{TINY_MODELS_DIR}), to try a job offline without checkpoints; its outputs are not meaningful")
DASHBOARD_ADDRESS_HELP = "the Ray cluster's dashboard URL, where its Jobs API answers, e.g. http://HEAD:8265"


def emit(text: str) -> None:
    """Write a command's result to stdout; commands that packages add use it, so printing stays in the CLI."""
    print(text)


class UsageError(Exception):
    """A mistake in a command's arguments; its message is the whole `error:` line, fix included."""


def _unreachable(address: str | None, exc: ConnectionError, expected: str) -> UsageError:
    return UsageError(f"cannot reach the Ray cluster at --address {address!r} ({exc}); fix: give {expected}")


def _refused(args: argparse.Namespace, what: str, exc: Exception) -> Exception:
    """A refusal by the cluster's Jobs API (a missing or wrong token, an unknown job id) as a usage error;
    any other exception as it is."""
    # Ray's Jobs client raises AuthenticationError for the token, RuntimeError with the HTTP status otherwise.
    if type(exc).__name__ != "AuthenticationError" and not (isinstance(exc, RuntimeError) and "status code" in str(exc)):
        return exc
    reason = str(exc).strip().splitlines()[0]
    return UsageError(f"the Ray cluster at --address {args.address!r} refused {what}: {reason}; fix: check the job "
                      "id (`ray job list`) and give the cluster's token in RAY_AUTH_TOKEN")


def _load_plan(args: argparse.Namespace):  # noqa: ANN202 - Plan is imported lazily
    from dataprep.config import load_config
    from dataprep.plan import build_plan

    config = load_config(args.config, input=args.input, output=args.output)
    tiny = TINY_MODELS_DIR if getattr(args, "tiny_models", False) else None
    return build_plan(config, tiny_models=tiny)


def cmd_validate(args: argparse.Namespace) -> int:
    """Check a config without running it, and that its output folder holds no other config's output."""
    from dataprep import job_record

    plan = _load_plan(args)
    job_record.check_same_job(plan)
    print(f"ok: {len(plan.all_stages)} stages, input {plan.config.input}, output {plan.config.output}")
    for p in plan.all_stages:
        print(f"  {p.index:2d}. {p.name:<16} reads {', '.join(p.reads) or '-'}; writes {', '.join(p.writes) or '-'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run a job on embedded Ray or on a cluster."""
    from dataprep.cli_tables import print_run_end, print_summary
    from dataprep.ray_stop import stopped_at_end
    from dataprep.runner import run_plan

    plan = _load_plan(args)
    # Ray stops here, once the summary is out, rather than at interpreter exit, where it is slower.
    with stopped_at_end():
        try:
            result = run_plan(plan, address=args.address, progress=not args.quiet, verbose=args.verbose)
        except ConnectionError as exc:
            address = args.address or plan.config.ray.address
            if not address:  # embedded Ray: not an address the user gave
                raise
            raise _unreachable(address, exc, RUN_ADDRESS_HELP) from None
        print_summary(result.summary,
                      title=f"{plan.config.output}  ({result.new_rows} new rows, {result.wall_seconds:.1f} s)")
        print_run_end(plan.config.output, result.summary)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """Validate a config here, then run it as a Ray job on a cluster."""
    from dataprep import submit

    _load_plan(args)
    try:
        job_id = submit.submit(args.config, address=args.address, input=args.input, output=args.output)
    except ConnectionError as exc:
        raise _unreachable(args.address, exc, DASHBOARD_ADDRESS_HELP) from None
    except Exception as exc:
        raise _refused(args, "the job", exc) from None
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

    try:
        if args.command == "status":
            text = f"{submit.status(args.job_id, address=args.address)}\n"
        elif args.command == "logs":
            text = submit.logs(args.job_id, address=args.address)
        else:
            text = "stopped\n" if submit.stop(args.job_id, address=args.address) else "not running\n"
    except ConnectionError as exc:
        raise _unreachable(args.address, exc, DASHBOARD_ADDRESS_HELP) from None
    except Exception as exc:
        raise _refused(args, f"`{args.command} {args.job_id}`", exc) from None
    print(text, end="")
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    """List the stages that configs can name."""
    from dataprep.cli_tables import describe_stages, stages_markdown, stages_table
    from dataprep.registry import Registry

    try:
        registry = Registry(args.plugin or ())
    except (ImportError, ValueError) as exc:
        raise UsageError(f"--plugin: {exc}") from None
    rows = describe_stages(registry)
    if args.json:
        print(json.dumps(rows, indent=1))
    elif args.markdown:
        print(stages_markdown(rows))
    else:
        stages_table(rows)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from dataprep.shard_view import extract, sample_detail, shard_listing

    no_such_key = UsageError(f"no sample with key {args.key!r} in {args.shard}; "
                             f"fix: run `dataprep inspect {args.shard}` to list its keys")
    if args.extract:
        try:
            written = extract(args.shard, args.extract, args.key)
        except OSError as exc:
            raise UsageError(f"--extract {args.extract!r} cannot be written ({exc}); "
                             "fix: choose a folder you can write to") from None
        if args.key and not written:
            raise no_such_key
        print(f"{len(written)} files written to {args.extract}")
        for path in written:
            print(f"  {os.path.basename(path)}")
    elif args.key:
        detail = sample_detail(args.shard, args.key)
        if detail is None:
            raise no_such_key
        print(json.dumps(detail, indent=1, ensure_ascii=False))
    else:
        samples = shard_listing(args.shard)
        print(f"{args.shard}: {len(samples)} samples")
        for s in samples:
            files = ", ".join(f"{ext} {size} B" for ext, size in s["files"].items())
            print(f"  {s['key']}: {files}  {s['caption'][:60]!r}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Show the samples of a shard or one sample, or extract their files."""
    from dataprep.shard_view import NotAShardError

    try:
        return _inspect(args)
    except NotAShardError as exc:
        raise UsageError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(prog="dataprep", description="Prepare video and image training data on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log debug messages, and show Ray's own INFO and WARNING lines")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", help="job config YAML")
        p.add_argument("--input", help="override the config's `input`")
        p.add_argument("--output", help="override the config's `output`")

    p = sub.add_parser("run", help="run a job (embedded Ray unless --address)")
    with_config(p)
    p.add_argument("--tiny-models", action="store_true", help=TINY_MODELS_HELP)
    p.add_argument("--address", help=RUN_ADDRESS_HELP)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("submit", help="run a job on a Ray cluster through its Jobs API")
    with_config(p)
    p.add_argument("--address", required=True, help=DASHBOARD_ADDRESS_HELP)
    p.add_argument("--wait", action="store_true", help="wait for the job to end and print its logs")
    p.set_defaults(func=cmd_submit)

    for name, text in (("status", "state of a submitted job"), ("logs", "logs of a submitted job"),
                       ("stop", "stop a submitted job")):
        p = sub.add_parser(name, help=text)
        p.add_argument("job_id")
        p.add_argument("--address", required=True, help=DASHBOARD_ADDRESS_HELP)
        p.set_defaults(func=cmd_job)

    p = sub.add_parser("validate", help="check a config and its stage plan without running")
    with_config(p)
    p.add_argument("--tiny-models", action="store_true", help=TINY_MODELS_HELP)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("stages", help="list available stages and their options")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--markdown", action="store_true")
    p.add_argument("--plugin", action="append", help="also import this plugin module")
    p.set_defaults(func=cmd_stages)

    add_stats_command(sub)

    p = sub.add_parser("inspect", help="list a shard's samples, show one, or extract their files")
    p.add_argument("shard", help="a shard's .tar, local or s3://")
    p.add_argument("key", nargs="?", help="one sample's key; default: every sample")
    p.add_argument("--extract", metavar="DIR",
                   help="write the sample's files (media, thumbnails, metadata) into DIR as KEY.<member>")
    p.set_defaults(func=cmd_inspect)

    # Commands of installed packages (the built-in `sample-data` among them): the core knows none by name.
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def _quiet_stdout() -> None:
    """Point stdout at /dev/null: the reader is gone, and the flush at exit must not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dataprep` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from dataprep.errors import ConfigError, FatalStageError

    try:
        return args.func(args)
    except ConfigError as exc:
        # One problem fits on one line; several are listed under the heading.
        print(f"error: {exc.problems[0]}" if len(exc.problems) == 1 else f"error: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FatalStageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader stopped early (`| head`): what it did not read is not wanted; Python exits 1 on EPIPE.
        _quiet_stdout()
        return 1
    except KeyboardInterrupt:
        from dataprep.ray_stop import stop_ray

        stop_ray()
        resume = "; rerun the same command to resume" if args.func is cmd_run else ""
        print(f"interrupted{resume}", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
