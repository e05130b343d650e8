"""The HTML report of an output: one self-contained file with inline SVG charts and JPEG thumbnails.

    dataprep stats out/t2v --html report.html

No script, no external font or stylesheet, no network: the page opens from a mail
attachment or an air-gapped cluster. Its size is bounded by the gallery limits
(`dataprep.gallery`) and the histogram bins (`dataprep.stats_view`), not by the job.
"""

from __future__ import annotations

from html import escape
from typing import Any

from dataprep.gallery import Gallery, KeptSample, RejectedSample
from dataprep.stats_view import Histogram, StatsView

_KEPT = "#2563eb"
_REJECTED = "#f97316"
_THRESHOLD = "#dc2626"
# Per-shard table rows beyond this are summed in a last row: 1M rows in 100-row shards would be 10k rows.
MAX_SHARD_ROWS = 2000
# Values on a gallery card: enough for size, duration and a few scores on three lines.
_SHOWN_SCORES = 6

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;margin:0;
 background:#f8fafc;color:#0f172a}
main{max-width:1320px;margin:0 auto;padding:24px 32px 64px}
h1{font-size:26px;margin:0 0 4px} h2{font-size:20px;margin:36px 0 12px;border-bottom:1px solid #e2e8f0;
 padding-bottom:6px} h3{font-size:15px;margin:20px 0 8px}
.muted{color:#64748b}.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-size:12px;
 background:#dcfce7;color:#166534}.badge.partial{background:#fef3c7;color:#92400e}
.totals{display:flex;gap:12px;flex-wrap:wrap;margin-top:16px}
.total{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:10px 16px;min-width:120px}
.total b{display:block;font-size:22px}.total span{font-size:12px;color:#64748b}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid #e2e8f0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f1f5f9}td.n{text-align:right;font-variant-numeric:tabular-nums}
.hists{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}
.hist{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:8px 10px}
.hist h3{margin:0 0 2px;font-size:14px}.hist p{margin:2px 0;font-size:11px;color:#64748b}
.legend{font-size:12px;color:#475569}.sw{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}
.cats{display:flex;gap:16px;flex-wrap:wrap}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(140px,1fr));gap:10px}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:6px;font-size:11px;overflow:hidden}
.card img,.placeholder{width:100%;height:110px;object-fit:cover;border-radius:4px;display:block;background:#e2e8f0}
.placeholder{display:flex;align-items:center;justify-content:center;color:#64748b}
.card .key{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:10px;color:#64748b;word-break:break-all}
.card .cap{margin:3px 0;max-height:44px;overflow:hidden}.card .reason{color:#b45309;font-weight:600}
.card .against{color:#b91c1c;font-family:ui-monospace,Menlo,Consolas,monospace}
.scroll{max-height:420px;overflow:auto;display:inline-block}
"""


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) >= 10000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def funnel_svg(funnel: list[dict[str, Any]]) -> str:
    """Horizontal bars per stage: rows out (blue) and rejected (orange), scaled to the widest stage."""
    widest = max((row["in"] for row in funnel), default=0) or 1
    label_w, bar_w, row_h = 150, 820, 30
    height = row_h * len(funnel) + 10
    parts = [f'<svg id="funnel-chart" xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 200}" '
             f'height="{height}" role="img" aria-label="funnel">']
    for i, row in enumerate(funnel):
        y = 5 + i * row_h
        out_w = bar_w * row["out"] / widest
        rej_w = bar_w * row["rejected"] / widest
        parts.append(f'<text x="{label_w - 8}" y="{y + 18}" text-anchor="end" font-size="13">'
                     f'{escape(row["stage"])}</text>')
        parts.append(f'<rect class="funnel-out" x="{label_w}" y="{y}" width="{out_w:.1f}" height="{row_h - 8}" '
                     f'fill="{_KEPT}" rx="2"/>')
        if row["rejected"]:
            parts.append(f'<rect class="funnel-rejected" x="{label_w + out_w:.1f}" y="{y}" width="{rej_w:.1f}" '
                         f'height="{row_h - 8}" fill="{_REJECTED}" rx="2"/>')
        note = f'{row["in"]:,} in, {row["out"]:,} out' + (f', {row["rejected"]:,} rejected' if row["rejected"] else "")
        parts.append(f'<text x="{label_w + out_w + rej_w + 8:.1f}" y="{y + 16}" font-size="12" fill="#475569">'
                     f'{escape(note)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram_svg(h: Histogram, width: int = 300, height: int = 150) -> str:
    """Bars of kept (blue) and threshold-rejected (orange, stacked) rows, with filter thresholds as red lines."""
    left, right, top, bottom = 34, 8, 16, 20
    plot_w, plot_h = width - left - right, height - top - bottom
    lo, hi = h.edges[0], h.edges[-1]
    tallest = max((k + r for k, r in zip(h.kept, h.rejected, strict=True)), default=0) or 1

    def x_of(v: float) -> float:
        return left + (v - lo) / (hi - lo) * plot_w

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="histogram of {escape(h.column)}">',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#94a3b8"/>',
             f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" font-size="10" fill="#64748b">{tallest:,}</text>']
    for i, (k, r) in enumerate(zip(h.kept, h.rejected, strict=True)):
        x0, x1 = x_of(h.edges[i]), x_of(h.edges[i + 1])
        w = max(x1 - x0 - 1, 1)
        kh, rh = plot_h * k / tallest, plot_h * r / tallest
        if k:
            parts.append(f'<rect class="bar" x="{x0:.1f}" y="{top + plot_h - kh:.1f}" width="{w:.1f}" '
                         f'height="{kh:.1f}" fill="{_KEPT}"/>')
        if r:
            parts.append(f'<rect class="bar rejected" x="{x0:.1f}" y="{top + plot_h - kh - rh:.1f}" width="{w:.1f}" '
                         f'height="{rh:.1f}" fill="{_REJECTED}"/>')
    parts.append(f'<text x="{left}" y="{height - 5}" font-size="10" fill="#64748b">{_fmt(lo)}</text>')
    parts.append(f'<text x="{left + plot_w}" y="{height - 5}" font-size="10" fill="#64748b" text-anchor="end">'
                 f'{_fmt(hi)}</text>')
    for t in h.thresholds:
        if lo <= t.value <= hi:
            x = x_of(t.value)
            anchor = "start" if x < left + plot_w / 2 else "end"
            dx = 3 if anchor == "start" else -3
            parts.append(f'<line class="threshold" x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{top + plot_h}" '
                         f'stroke="{_THRESHOLD}" stroke-width="2" stroke-dasharray="4 3"/>')
            parts.append(f'<text x="{x + dx:.1f}" y="{top + 4}" font-size="10" fill="{_THRESHOLD}" '
                         f'text-anchor="{anchor}">{escape(t.option)} {_fmt(t.value)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _histogram_card(h: Histogram) -> str:
    outside = [t for t in h.thresholds if not h.edges or not h.edges[0] <= t.value <= h.edges[-1]]
    lines = [f'<div class="hist" id="hist-{escape(h.column)}" data-column="{escape(h.column)}">',
             f"<h3>{escape(h.column)}</h3>"]
    if h.edges:
        lines.append(histogram_svg(h))
        lines.append(f"<p>{h.count:,} values, {h.nulls:,} empty; min {_fmt(h.min)}, mean {_fmt(h.mean)}, "
                     f"max {_fmt(h.max)}</p>")
    else:
        lines.append(f"<p>no values ({h.nulls:,} empty)</p>")
    if sum(h.rejected):
        lines.append(f"<p>orange: {sum(h.rejected):,} rows a threshold on this column rejected</p>")
    for t in h.thresholds:
        where = " (beyond the data)" if t in outside else ""
        side = "keeps ≥" if t.side == "min" else "keeps ≤"
        if t.rewritten_by:
            where += f"; checked before {escape(t.rewritten_by)} rewrote the column"
        lines.append(f"<p>{escape(t.stage)} <code>{escape(t.option)}</code> {side} {_fmt(t.value)}{where}</p>")
    lines.append("</div>")
    return "".join(lines)


def _thumb(uri: str | None) -> str:
    if uri is None:
        return '<div class="placeholder">no preview</div>'
    return f'<img src="{uri}" alt="">'


def _scores(scores: dict[str, Any]) -> str:
    """Numbers only, a few: a source's whole row (caption, source, key) is recorded by some stages."""
    numbers = [(k, v) for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               or k == "size"]
    return ", ".join(f"{escape(k)} {escape(_fmt(v) if isinstance(v, float) else str(v))}"
                     for k, v in numbers[:_SHOWN_SCORES])


def _kept_card(s: KeptSample) -> str:
    return (f'<div class="card kept">{_thumb(s.thumbnail)}<div class="key">{escape(s.key)}</div>'
            f'<div class="cap">{escape(s.caption)}</div><div class="muted">{_scores(s.scores)}</div></div>')


def _rejected_card(s: RejectedSample) -> str:
    against = f'<div class="against">{escape(s.against)}</div>' if s.against else ""
    detail = f"<div>{escape(s.detail)}</div>" if s.detail and not s.against else ""
    return (f'<div class="card rejected">{_thumb(s.thumbnail)}<div class="key">{escape(s.key)}</div>'
            f'<div class="reason">{escape(s.stage)}: {escape(s.reason.split(": ", 1)[0])}</div>{against}{detail}'
            f'<div class="muted">{_scores(s.scores)}</div></div>')


def _funnel_table(funnel: list[dict[str, Any]]) -> str:
    rows = ['<table id="reasons-table"><tr><th>stage</th><th>reason code</th><th>rows</th>'
            "<th>example details</th></tr>"]
    for row in funnel:
        for code, n in row["reasons"].items():
            details = "<br>".join(escape(d) for d in row.get("reason_details", {}).get(code, []))
            rows.append(f"<tr><td>{escape(row['stage'])}</td><td><code>{escape(code)}</code></td>"
                        f'<td class="n">{n:,}</td><td class="muted">{details}</td></tr>')
    rows.append("</table>")
    return "".join(rows) if len(rows) > 2 else '<p class="muted">no rejections</p>'


def _shard_table(view: StatsView) -> str:
    rows = ['<div class="scroll"><table id="shard-table"><tr><th>shard</th><th>samples</th><th>size</th>'
            "<th>video (min)</th></tr>"]
    for s in view.shards[:MAX_SHARD_ROWS]:
        rows.append(f'<tr class="shard"><td>{escape(s.shard)}</td><td class="n">{s.count:,}</td>'
                    f'<td class="n">{_size(s.bytes)}</td><td class="n">{s.video_seconds / 60:.1f}</td></tr>')
    rest = view.shards[MAX_SHARD_ROWS:]
    if rest:
        rows.append(f'<tr><td>{len(rest):,} more shards</td><td class="n">{sum(s.count for s in rest):,}</td>'
                    f'<td class="n">{_size(sum(s.bytes for s in rest))}</td>'
                    f'<td class="n">{sum(s.video_seconds for s in rest) / 60:.1f}</td></tr>')
    rows.append("</table></div>")
    return "".join(rows)


def _categories(view: StatsView) -> str:
    tables = []
    for column, top in view.categories.items():
        body = "".join(f'<tr><td>{escape(v)}</td><td class="n">{n:,}</td></tr>' for v, n in top.items())
        tables.append(f'<table class="category"><tr><th>{escape(column)}</th><th>rows</th></tr>{body}</table>')
    return f'<div class="cats">{"".join(tables)}</div>'


def render(view: StatsView, gallery: Gallery) -> str:
    """The whole report as one HTML document."""
    t = view.totals
    status = ('<span class="badge">finished</span>' if view.finalized
              else '<span class="badge partial">in progress or interrupted: committed shards so far</span>')
    totals = [("kept samples", f"{t['kept']:,}"), ("rejected", f"{t['rejected']:,}"), ("shards", f"{t['shards']:,}"),
              ("in shards", _size(t["shard_bytes"])), ("hours of video", f"{t['video_hours']:.2f}")]
    notes = "".join(f'<p class="muted">{escape(n)}</p>' for n in view.notes)
    legend = (f'<div class="legend"><span class="sw" style="background:{_KEPT}"></span>kept'
              f'<span class="sw" style="background:{_REJECTED}"></span>rejected by a threshold on the column'
              f'<span class="sw" style="background:{_THRESHOLD}"></span>filter threshold</div>')
    rejected_groups = []
    for code, samples in gallery.rejected.items():
        total = gallery.rejected_counts.get(code, len(samples))
        cards = "".join(_rejected_card(s) for s in samples)
        rejected_groups.append(f'<div class="reason-group" data-reason="{escape(code)}"><h3><code>{escape(code)}'
                               f'</code> <span class="muted">{total:,} rows, {len(samples)} shown</span></h3>'
                               f'<div class="gallery">{cards}</div></div>')
    hidden = len(gallery.rejected_counts) - len(gallery.rejected)
    if hidden > 0:
        rejected_groups.append(f'<p class="muted">{hidden} more reason codes not shown</p>')
    return "".join([
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>dataprep report: {escape(view.output)}</title><style>{_CSS}</style></head><body><main>",
        f'<h1>dataprep report</h1><div class="muted"><code>{escape(view.output)}</code> {status}</div>{notes}',
        '<div class="totals" id="totals">',
        "".join(f'<div class="total"><b>{v}</b><span>{k}</span></div>' for k, v in totals), "</div>",
        '<section id="funnel"><h2>Funnel</h2>', funnel_svg(view.funnel) if view.funnel else "",
        _funnel_table(view.funnel), "</section>",
        f'<section id="histograms"><h2>Distributions of kept samples</h2>{legend}<div class="hists">',
        "".join(_histogram_card(h) for h in view.histograms), "</div>", _categories(view), "</section>",
        f'<section id="shards"><h2>Shards</h2>{_shard_table(view)}</section>',
        f'<section id="kept"><h2>Kept samples <span class="muted">({len(gallery.kept)} of {t["kept"]:,})</span></h2>',
        f'<div class="gallery" id="kept-gallery">{"".join(_kept_card(s) for s in gallery.kept)}</div></section>',
        '<section id="rejected"><h2>Rejected samples by reason</h2>',
        f'<div id="rejected-gallery">{"".join(rejected_groups)}</div></section>',
        "</main></body></html>",
    ])
