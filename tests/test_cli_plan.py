"""What `validate` and `stages --markdown` print about the plan and the stages."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dataprep.cli", *args], capture_output=True, text=True, cwd=REPO)


def test_validate_prints_each_instance_columns(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text(f"input: {tmp_path}\noutput: {tmp_path}/out\nstages:\n  - stage: ingest\n"
                      "  - stage: frame_sample\n  - stage: minhash_dedup\n    mode: visual\n    keep: key\n")
    result = _run("validate", str(config))
    assert result.returncode == 0, result.stderr
    (line,) = [l for l in result.stdout.splitlines() if "minhash_dedup" in l]
    reads = line.split("reads ", 1)[1].split(";")[0]
    # The class reads captions (its default mode); this instance (mode: visual) reads thumbnails only.
    assert "frames" in reads and "caption" not in reads


def test_stages_markdown_tables_have_four_cells_per_row():
    markdown = _run("stages", "--markdown").stdout
    rows = [l for l in markdown.splitlines() if l.startswith("| `")]
    assert len(rows) > 20
    for row in rows:
        cells = re.split(r"(?<!\\)\|", row.strip())[1:-1]
        assert len(cells) == 4, row
    assert any("float \\| None" in r or "int \\| None" in r for r in rows)
