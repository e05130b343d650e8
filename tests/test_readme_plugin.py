"""The README's plugin example, run exactly as written: a user's filter with one option in at most 12 lines."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from dataprep.config import parse_config
from dataprep.errors import ConfigError
from dataprep.plan import build_plan
from dataprep.registry import Registry
from dataprep.stage_task import StageTask
from tests.helpers import read_ledger

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    section = README.read_text().split("## Writing a stage", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "readme_plugin.py").write_text(_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "readme_plugin"
    sys.modules.pop("readme_plugin", None)


def test_example_fits_in_twelve_lines():
    lines = _example().rstrip("\n").split("\n")
    assert len(lines) <= 12, f"README's plugin example has {len(lines)} lines"


def test_example_filters_and_records_its_rejections(plugin, tmp_path):
    cls = Registry([plugin]).get("no_portrait")
    config = parse_config({"input": str(tmp_path), "output": str(tmp_path / "out"), "plugins": [plugin],
                           "stages": [{"stage": "ingest"}, {"stage": "probe"}, {"stage": "no_portrait", "max_ratio": 1.5}]})
    planned = build_plan(config).stages[-1]
    assert planned.cls is cls and planned.params.max_ratio == 1.5
    batch = pa.table({"key": ["wide", "tall", "square"], "source": ["/w", "/t", "/s"],
                      "width": [640, 360, 100], "height": [360, 640, 100]})
    kept = StageTask(planned, str(tmp_path / "out"))(batch)
    assert kept.column("key").to_pylist() == ["wide", "square"]
    (row,) = read_ledger(tmp_path / "out")
    assert row["key"] == "tall" and row["reason"] == "portrait:ratio: 1.78" and '"height": 640' in row["scores"]


def test_example_option_typo_is_refused(plugin, tmp_path):
    config = parse_config({"input": str(tmp_path), "output": str(tmp_path / "out"), "plugins": [plugin],
                           "stages": [{"stage": "ingest"}, {"stage": "probe"}, {"stage": "no_portrait", "max_ration": 2}]})
    with pytest.raises(ConfigError, match="did you mean `max_ratio`"):
        build_plan(config)


def test_readme_stage_tests_run_as_written(plugin, tmp_path):
    """The README's two examples of testing a stage, run against its plugin example."""
    section = README.read_text().split("## Writing a stage", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 3, "the plugin example and two test examples"
    namespace: dict = {}
    exec(blocks[0], namespace)  # noqa: S102 - the README's own text is what is tested
    for block in blocks[1:]:
        exec(block, namespace)  # noqa: S102
    tests = [name for name in namespace if name.startswith("test_")]
    assert tests == ["test_no_portrait", "test_no_portrait_goes_to_the_ledger"]
    namespace["test_no_portrait"]()
    namespace["test_no_portrait_goes_to_the_ledger"](tmp_path)
