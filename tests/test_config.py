"""Config parsing and the whole-plan check: bad configs fail before any work, saying what to fix."""

from __future__ import annotations

import os

import pytest

from dataprep.config import load_config, parse_config
from dataprep.errors import ConfigError
from dataprep.plan import build_plan


def _config(tmp_path, stages, **extra):
    raw = {"input": str(tmp_path), "output": str(tmp_path / "out"), "stages": stages, **extra}
    return parse_config(raw)


def _problems(tmp_path, stages, **extra) -> str:
    with pytest.raises(ConfigError) as info:
        build_plan(_config(tmp_path, stages, **extra))
    return str(info.value)


def test_valid_plan_lists_columns(tmp_path):
    plan = build_plan(_config(tmp_path, [{"stage": "ingest"}, {"stage": "probe"}, {"stage": "size_filter"}]))
    assert [p.name for p in plan.all_stages] == ["ingest", "probe", "size_filter"]
    assert {"key", "source", "width", "duration"} <= set(plan.columns)


def test_unknown_stage_suggests_close_match(tmp_path):
    message = _problems(tmp_path, [{"stage": "ingest"}, {"stage": "prob"}])
    assert "unknown stage 'prob'" in message and "did you mean 'probe'" in message


def test_unknown_option_suggests_close_match(tmp_path):
    message = _problems(tmp_path, [{"stage": "ingest"}, {"stage": "probe"}, {"stage": "size_filter", "min_sid": 3}])
    assert "size_filter" in message and "`min_sid`" in message and "did you mean `min_side`" in message


def test_ill_typed_option_names_value(tmp_path):
    message = _problems(tmp_path, [{"stage": "ingest"}, {"stage": "probe"}, {"stage": "size_filter", "min_side": "big"}])
    assert "`min_side`" in message and "'big'" in message


def test_out_of_range_option_names_bound(tmp_path):
    message = _problems(tmp_path, [{"stage": "ingest"}, {"stage": "probe"}, {"stage": "size_filter", "max_seconds": -3}])
    assert "`max_seconds`" in message and "-3" in message and "greater than 0" in message


def test_inconsistent_options_fail(tmp_path):
    message = _problems(tmp_path, [{"stage": "ingest"}, {"stage": "probe"},
                                   {"stage": "size_filter", "min_seconds": 5, "max_seconds": 2}])
    assert "min_seconds" in message and "max_seconds" in message


def test_missing_column_names_the_stage_that_writes_it(tmp_path):
    message = _problems(tmp_path, [{"stage": "ingest"}, {"stage": "size_filter"}])
    line = next(x for x in message.splitlines() if "reads column 'width'" in x)
    # Every stage that writes it is offered (probe, standardize, image_standardize, face_crop...).
    assert "which no earlier stage writes; fix: add " in line and "'probe'" in line and line.endswith("before it")


def test_first_stage_must_be_source(tmp_path):
    message = _problems(tmp_path, [{"stage": "probe"}])
    assert "put `- stage: ingest` first" in message


def test_missing_input_fails_before_work(tmp_path):
    raw = {"input": str(tmp_path / "nope"), "output": str(tmp_path / "out"), "stages": [{"stage": "ingest"}]}
    with pytest.raises(ConfigError, match="does not exist"):
        build_plan(parse_config(raw))


def test_unknown_top_level_key_and_bad_runner_option(tmp_path):
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, [{"stage": "ingest", "batch_size": 0}], sinkk={})
    message = str(info.value)
    assert "`sinkk`: unknown option" in message and "stages[0].batch_size" in message


def test_sink_bucket_column_must_be_written(tmp_path):
    message = _problems(tmp_path, [{"stage": "ingest"}], sink={"bucket_column": "bucket"})
    assert "sink.bucket_column" in message
    message = _problems(tmp_path, [{"stage": "ingest"}], sink={"bucket_path": "{key}/f{frame_count}"})
    assert "`sink.bucket_path` reads column 'frame_count'" in message and "'key'" not in message


def test_sink_bucket_path_is_checked_before_work(tmp_path):
    with pytest.raises(ConfigError, match="must name columns in braces"):
        _config(tmp_path, [{"stage": "ingest"}], sink={"bucket_path": "fixed"})
    with pytest.raises(ConfigError, match="not both"):
        _config(tmp_path, [{"stage": "ingest"}], sink={"bucket_path": "{a}", "bucket_column": "a"})


def test_overrides_and_yaml_errors(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("input: a\noutput: b\nstages: [ingest]\n")
    config = load_config(path, input=str(tmp_path), output="elsewhere")
    assert config.input == str(tmp_path) and config.output == "elsewhere"
    path.write_text("input: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_all_problems_reported_at_once(tmp_path):
    message = _problems(tmp_path, [{"stage": "ingest"}, {"stage": "prob"}, {"stage": "size_filter", "min_sid": 1}])
    assert "prob" in message and "min_sid" in message


def test_configured_resources_reach_the_stage_instance(tmp_path):
    plan = build_plan(_config(tmp_path, [{"stage": "ingest"}, {"stage": "probe", "resources": {"cpus": 3}}]))
    assert plan.stages[0].instantiate().resources.cpus == 3


@pytest.mark.parametrize(("typo", "where", "meant"), [
    ({"outptu": "o"}, "`outptu`", "`output`"),
    ({"sink": {"max_sample": 4}}, "`sink.max_sample`", "`max_samples`"),
    ({"ray": {"adress": "auto"}}, "`ray.adress`", "`address`"),
])
def test_top_level_typo_suggests_the_option(tmp_path, typo, where, meant):
    raw = {"input": str(tmp_path), "output": "o", "stages": ["ingest"], **typo}
    if "outptu" in typo:
        del raw["output"]
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert info.value.problems == [f"{where}: unknown option; did you mean {meant}?"]


def test_runner_key_typo_suggests_the_option(tmp_path):
    with pytest.raises(ConfigError, match=r"`stages\[0\]\.resources\.cpu`: unknown option; did you mean `cpus`\?"):
        _config(tmp_path, [{"stage": "ingest", "resources": {"cpu": 2}}])


def test_every_spelling_of_a_local_input_is_one(tmp_path, monkeypatch):
    (tmp_path / "sample").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "sample")
    monkeypatch.chdir(tmp_path)
    spellings = ("sample", "sample/", "./sample", str(tmp_path / "sample"), "link", f"file://{tmp_path}/sample")
    inputs = {parse_config({"input": s, "output": "o", "stages": ["ingest"]}).input for s in spellings}
    assert inputs == {os.path.realpath(tmp_path / "sample")}
    assert parse_config({"input": "s3://bucket/sample/", "output": "o", "stages": ["ingest"]}).input == \
        "s3://bucket/sample/"
