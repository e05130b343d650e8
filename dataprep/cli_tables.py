"""The CLI's human-readable tables (rich): the job summary and the stage catalogue."""

from __future__ import annotations

from typing import Any

from dataprep.registry import Registry


def print_summary(summary: dict[str, Any], *, title: str, fields: bool = False) -> None:
    """Print totals, the per-stage funnel with rejection reasons, and (optionally) field statistics."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    totals = summary["totals"]
    console.print(
        f"[bold]{title}[/bold]: kept {totals['kept']}, rejected {totals['rejected']}, "
        f"{totals['shards']} shards, {totals['shard_bytes'] / 1e6:.1f} MB"
    )
    table = Table(title="funnel")
    for name in ("stage", "in", "out", "rejected", "reasons"):
        table.add_column(name, justify="right" if name in ("in", "out", "rejected") else "left")
    for row in summary["funnel"]:
        reasons = ", ".join(f"{k} {v}" for k, v in row["reasons"].items())
        table.add_row(row["stage"], str(row["in"]), str(row["out"]), str(row["rejected"]), reasons)
    console.print(table)
    if fields:
        ftable = Table(title="fields of kept samples")
        for name in ("field", "count", "min", "mean", "max", "top values"):
            ftable.add_column(name)
        for name, f in summary["fields"].items():
            top = ", ".join(f"{k} {v}" for k, v in list(f.get("top", {}).items())[:4])
            ftable.add_row(name, str(f["count"]), _num(f.get("min")), _num(f.get("mean")), _num(f.get("max")), top)
        console.print(ftable)


def next_commands(output: str, summary: dict[str, Any]) -> list[str]:
    """The commands that look at a finished job's output: statistics, the HTML report, one shard."""
    out = output.rstrip("/")
    commands = [f"dataprep stats {out}", f"dataprep stats {out} --html {out}/report.html"]
    if summary.get("shards"):
        commands.append(f"dataprep inspect {out}/{summary['shards'][0]['shard']}")
    return commands


def print_run_end(output: str, summary: dict[str, Any]) -> None:
    """Print where a run's output is and the commands to look at it."""
    from rich.console import Console

    console = Console()
    console.print(f"[bold]output[/bold]: {output}")
    console.print("next:")
    for command in next_commands(output, summary):
        console.print(f"  {command}", highlight=False, markup=False)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def describe_stages(registry: Registry) -> list[dict[str, Any]]:
    """Name, kind, columns and options of every registered stage."""
    from dataprep.stage import Filter, GlobalStage, Source

    rows = []
    for name in registry.names():
        try:
            cls = registry.get(name)
        except Exception as exc:  # one broken plugin must not hide the others
            rows.append({"name": name, "kind": "error", "error": str(exc)})
            continue
        kind = (
            "source" if issubclass(cls, Source)
            else "global" if issubclass(cls, GlobalStage)
            else "filter" if issubclass(cls, Filter)
            else "stage"
        )
        options = []
        for option, field in cls.Params.model_fields.items():
            options.append(
                {
                    "name": option,
                    "type": getattr(field.annotation, "__name__", str(field.annotation)),
                    "default": None if field.is_required() else repr(field.get_default(call_default_factory=True)),
                    "description": field.description or "",
                }
            )
        rows.append(
            {
                "name": name,
                "kind": kind,
                "doc": (cls.__doc__ or "").strip().split("\n")[0],
                "reads": list(cls.reads),
                "writes": list(cls.writes),
                "options": options,
            }
        )
    return rows


def stages_markdown(rows: list[dict[str, Any]]) -> str:
    """The stage catalogue as Markdown."""
    lines = []
    for r in rows:
        lines.append(f"### `{r['name']}` ({r['kind']})\n")
        if r["kind"] == "error":
            lines.append(f"Cannot load: {r['error']}\n")
            continue
        lines.append(f"{r['doc']}\n")
        lines.append(f"Reads: {', '.join(r['reads']) or '-'}. Writes: {', '.join(r['writes']) or '-'}.\n")
        if r["options"]:
            lines.append("| option | type | default | description |\n|---|---|---|---|")
            for o in r["options"]:
                cells = (f"`{o['name']}`", o["type"], str(o["default"]), o["description"])
                lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
            lines.append("")
    return "\n".join(lines)


def _cell(text: str) -> str:
    """`text` safe inside a Markdown table cell: a `|` (as in `float | None`) would end the cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def stages_table(rows: list[dict[str, Any]]) -> None:
    """Print the stage catalogue as a table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="stages")
    for name in ("name", "kind", "reads", "writes", "options"):
        table.add_column(name)
    for r in rows:
        if r["kind"] == "error":
            table.add_row(r["name"], "error", "", "", r["error"])
            continue
        table.add_row(r["name"], r["kind"], ", ".join(r["reads"]), ", ".join(r["writes"]),
                      ", ".join(o["name"] for o in r["options"]))
    Console().print(table)
