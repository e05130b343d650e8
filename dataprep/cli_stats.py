"""`dataprep stats OUTPUT [--json] [--html report.html]`: what an output holds, also while its job runs.

Reads only committed shards and ledger parts (`dataprep.stats_view`), so it needs
neither `summary.json` nor `manifest.parquet`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dataprep.stats_view import StatsView


def add_stats_command(sub: argparse._SubParsersAction) -> None:
    """Add `stats` to the CLI's subcommands."""
    p = sub.add_parser("stats", help="an output's totals, funnel, distributions and shards; --html writes a report")
    p.add_argument("output_dir", help="a job's output folder or s3:// prefix")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.add_argument("--html", metavar="REPORT", help="write a self-contained HTML report with plots and galleries")
    p.set_defaults(func=cmd_stats)


def cmd_stats(args: argparse.Namespace) -> int:
    """Print an output's statistics, or write its HTML report."""
    from dataprep import paths, storage
    from dataprep.stats_view import build_view

    output = args.output_dir
    if not storage.exists(paths.under(output, paths.JOB_FILE)) and not storage.list_files(
            paths.under(output, paths.SHARDS_DIR)):
        print(f"error: {output} holds no dataprep output (no {paths.JOB_FILE}, no shards); "
              "run a job into it first", file=sys.stderr)
        return 2
    view = build_view(output)
    if args.html:
        return _write_html(view, args.html)
    if args.json:
        print(json.dumps(view.to_json(), indent=1, sort_keys=True))
        return 0
    _print_tables(view)
    return 0


def _write_html(view: StatsView, target: str) -> int:
    from dataprep import storage
    from dataprep.gallery import build_gallery
    from dataprep.report_html import render

    page = render(view, build_gallery(view)).encode("utf-8")
    storage.write_atomic(target, page)
    print(f"wrote {target} ({len(page) / 1e6:.1f} MB); open it in a browser")
    return 0


def _print_tables(view: StatsView) -> None:
    from rich.console import Console
    from rich.table import Table

    from dataprep.cli_tables import print_summary
    from dataprep.stats_view import fields_summary

    console = Console()
    for note in view.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    print_summary({"totals": view.totals, "funnel": view.funnel, "fields": fields_summary(view)},
                  title=view.output, fields=True)
    console.print(f"hours of video: {view.totals['video_hours']:.2f}")
    details = Table(title="reasons, with example details")
    for name in ("stage", "reason", "rows", "examples"):
        details.add_column(name, justify="right" if name == "rows" else "left")
    for row in view.funnel:
        for code, n in row["reasons"].items():
            details.add_row(row["stage"], code, str(n), "\n".join(row["reason_details"].get(code, [])))
    if details.row_count:
        console.print(details)
    shards = Table(title="shards")
    for name in ("shard", "samples", "MB", "video min"):
        shards.add_column(name, justify="left" if name == "shard" else "right")
    for s in view.shards:
        shards.add_row(s.shard, str(s.count), f"{s.bytes / 1e6:.1f}", f"{s.video_seconds / 60:.1f}")
    console.print(shards)
