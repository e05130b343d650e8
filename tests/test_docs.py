"""Generated reference docs match the code: docs/stages.md is what `dataprep stages --markdown` prints now.

    .venv/bin/dataprep stages --markdown > docs/stages.md     # regenerate after changing a stage or an option
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

STAGES_MD = Path(__file__).resolve().parents[1] / "docs" / "stages.md"
REGENERATE = "dataprep stages --markdown > docs/stages.md"


def test_stages_reference_is_current():
    fresh = subprocess.run([sys.executable, "-m", "dataprep.cli", "stages", "--markdown"], capture_output=True,
                           text=True, check=True).stdout
    assert STAGES_MD.is_file(), f"docs/stages.md is missing; fix: {REGENERATE}"
    assert STAGES_MD.read_text() == fresh, f"docs/stages.md is stale; fix: {REGENERATE}"
