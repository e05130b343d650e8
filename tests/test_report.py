"""The HTML report: self-contained, bounded in size for big jobs, and visible in a real browser (headless Chromium)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest

from dataprep.cli import main
from dataprep.gallery import KEPT_LIMIT, PER_REASON, build_gallery
from dataprep.report_html import render
from dataprep.stats_view import build_view
from tests.test_stats import KEPT_COLOUR, REJECTED_COLOUR, fake_output

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_of_200k_rows_stays_small(tmp_path):
    """20 shards of 10k rows and 20k rejects: the page holds bins and samples, never whole columns."""
    out = fake_output(tmp_path, shards=20, rows_per_shard=10_000, rejects_per_reason=10_000, tar_samples=8)
    start = time.monotonic()
    view = build_view(str(out))
    html = render(view, build_gallery(view))
    took = time.monotonic() - start
    assert view.totals["kept"] == 200_000 and view.totals["rejected"] == 20_000
    size = len(html.encode("utf-8"))
    assert size < 2_000_000, f"report is {size / 1e6:.1f} MB"  # well under the ~20 MB bound for 1M rows
    assert html.count('class="card kept"') == KEPT_LIMIT
    assert html.count('class="card rejected"') == 2 * PER_REASON
    assert max(len(re.findall(r'class="bar', card)) for card in html.split('class="hist"')[1:]) <= 31
    # No key beyond the sampled ones reaches the page: the columns stay in Python.
    assert "k0003_0009999" not in html and "r_side_009999" not in html
    assert took < 60


def test_report_is_self_contained(tmp_path):
    out = fake_output(tmp_path)
    assert main(["stats", str(out), "--html", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "@import" not in html and "url(" not in html
    assert html.count("data:image/jpeg;base64,") == 12 + 3  # every kept sample, the readable rejects
    assert html.count('class="placeholder"') == 3  # the unreadable source of each probe rejection
    assert "short_side 40 &lt; min_side 64" in html  # the score against its threshold


def _colour_pixels(image, colour: tuple[int, int, int], tolerance: int = 40) -> int:
    import numpy as np

    pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
    return int((np.abs(pixels - np.array(colour)).max(axis=2) < tolerance).sum())


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; .ci/run does)")
def test_report_renders_in_headless_chromium(tmp_path):
    from PIL import Image, ImageStat

    out = fake_output(tmp_path)
    report = tmp_path / "report.html"
    assert main(["stats", str(out), "--html", str(report)]) == 0
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    png = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={png}", "--window-size=1400,3000", report.as_uri()],
                   check=True, capture_output=True, timeout=120)
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", report.as_uri()], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    assert 'id="funnel-chart"' in dom and dom.count('class="funnel-out"') == 3
    assert dom.count('class="hist"') == len(build_view(str(out)).histograms) >= 8
    # min_side and max_aspect are drawn; min_seconds 1.0 lies below every duration, so it is only listed.
    assert dom.count('class="threshold"') == 2 and "min_seconds</code> keeps ≥ 1 (beyond the data)" in dom
    assert dom.count('class="card kept"') == 12 and dom.count('class="card rejected"') == 6
    assert 'id="shard-table"' in dom and dom.count('class="shard"') == 3

    image = Image.open(png)
    assert image.size == (1400, 3000)
    assert max(ImageStat.Stat(image.convert("L")).var) > 100, "the screenshot is blank"
    # Both galleries are on screen: their thumbnails' colours are painted, not just in the DOM.
    assert _colour_pixels(image, KEPT_COLOUR) > 12 * 2000
    assert _colour_pixels(image, REJECTED_COLOUR) > 3 * 2000
