"""`dataprep stats OUTPUT`: an output's summary, as tables or JSON."""

from __future__ import annotations

import argparse
import json
import sys


def add_stats_command(sub: argparse._SubParsersAction) -> None:
    """Add `stats` to the CLI's subcommands."""
    p = sub.add_parser("stats", help="print an output's summary: funnel, rejections, shards")
    p.add_argument("output_dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)


def cmd_stats(args: argparse.Namespace) -> int:
    """Print an output's summary."""
    from dataprep import paths, storage
    from dataprep.cli_tables import print_summary

    uri = paths.under(args.output_dir, paths.SUMMARY)
    if not storage.exists(uri):
        print(f"error: {uri} does not exist; run a job into {args.output_dir} first", file=sys.stderr)
        return 2
    summary = json.loads(storage.read_bytes(uri))
    if args.json:
        print(json.dumps(summary, indent=1, sort_keys=True))
    else:
        print_summary(summary, title=args.output_dir, fields=True)
    return 0
