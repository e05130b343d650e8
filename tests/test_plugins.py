"""A user's stages, from a package outside the repo, found by entry point and by `plugins:`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

DATAPREP = [sys.executable, "-m", "dataprep.cli"]

ENTRY_POINT_FILTER = '''
import pyarrow as pa
from pydantic import Field

from dataprep.stage import Filter, StageParams


class NoPortraitParams(StageParams):
    max_ratio: float = Field(1.0, gt=0, description="height / width above this is portrait")


class NoPortrait(Filter):
    """Drops portrait media."""

    name = "no_portrait"
    reads = ("width", "height")
    writes = ("portrait_ratio",)
    Params = NoPortraitParams

    def process_batch(self, batch):
        ratio = [h / w for w, h in zip(batch.column("width").to_pylist(), batch.column("height").to_pylist())]
        return batch.append_column("portrait_ratio", pa.array(ratio))

    def reasons(self, batch):
        ratios = batch.column("portrait_ratio").to_pylist()
        return [None if r <= self.params.max_ratio else f"portrait:ratio {r:.2f}" for r in ratios]
'''

MODULE_STAGE = '''
import pyarrow as pa

from dataprep.stage import Stage


class CaptionLength(Stage):
    """Counts caption words."""

    name = "caption_words"
    reads = ("caption",)
    writes = ("caption_words",)

    def process_batch(self, batch):
        words = [len((c or "").split()) for c in batch.column("caption").to_pylist()]
        return batch.append_column("caption_words", pa.array(words, pa.int32()))
'''


def _make_plugins(root: Path) -> dict[str, str]:
    pkg = root / "site"
    (pkg / "acme_filters").mkdir(parents=True)
    (pkg / "acme_filters" / "__init__.py").write_text(ENTRY_POINT_FILTER)
    dist = pkg / "acme_filters-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-filters\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[dataprep.stages]\nno_portrait = acme_filters:NoPortrait\n")
    (root / "mods").mkdir()
    (root / "mods" / "acme_captions.py").write_text(MODULE_STAGE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(pkg), str(root / "mods"), str(Path(__file__).resolve().parents[1])])
    return env


@pytest.mark.integration
def test_user_filter_runs_and_its_rejections_reach_the_ledger(tmp_path, sample_dir):
    env = _make_plugins(tmp_path)
    listing = subprocess.run([*DATAPREP, "stages", "--json"], env=env, capture_output=True, text=True, check=True)
    names = {s["name"]: s for s in json.loads(listing.stdout)}
    assert names["no_portrait"]["kind"] == "filter" and names["no_portrait"]["options"][0]["name"] == "max_ratio"

    config = tmp_path / "job.yaml"
    config.write_text(textwrap.dedent(f"""
        input: {sample_dir}
        output: {tmp_path / "out"}
        plugins: [acme_captions]
        stages:
          - stage: ingest
          - stage: probe
          - stage: caption_words
          - stage: no_portrait
            max_ratio: 1.2
        sink: {{max_samples: 100}}
    """))
    subprocess.run([*DATAPREP, "run", str(config), "-q"], env=env, check=True, cwd=tmp_path, timeout=300)
    rejects = pq.read_table(tmp_path / "out" / "rejects.parquet").to_pylist()
    portrait = [r for r in rejects if r["stage"] == "no_portrait"]
    names = sorted(Path(r["source"]).stem for r in portrait)
    assert "portrait_testsrc" in names and "cuts_portrait" in names and "phone_rotated" in names
    assert all(r["reason"].startswith("portrait:ratio") and "portrait_ratio" in json.loads(r["scores"]) for r in portrait)
    manifest = pq.read_table(tmp_path / "out" / "manifest.parquet")
    assert "caption_words" in manifest.column_names and max(manifest.column("caption_words").to_pylist()) > 3


def test_missing_plugin_module_fails_validation(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text(f"input: {tmp_path}\noutput: {tmp_path / 'o'}\nplugins: [no_such_module_xyz]\nstages: [ingest]\n")
    result = subprocess.run([*DATAPREP, "validate", str(config)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "no_such_module_xyz" in result.stderr and "PYTHONPATH" in result.stderr
