"""The job config: YAML validated by pydantic at the boundary, plain objects inside."""

from __future__ import annotations

import difflib
import os
import string
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dataprep.errors import ConfigError

# Keys of a stage entry that the runner uses; every other key is a stage option.
ENTRY_KEYS = ("stage", "batch_size", "concurrency", "resources")


class ResourcesConfig(BaseModel):
    """Per-worker resources; unset fields keep the stage's defaults."""

    model_config = ConfigDict(extra="forbid")
    cpus: float | None = Field(None, gt=0, description="CPU cores per worker.")
    gpus: float | None = Field(None, ge=0, description="GPUs per worker; fractions share one GPU.")
    memory: int | None = Field(None, gt=0, description="Bytes of memory Ray reserves per worker.")


class StageEntry(BaseModel):
    """One entry of `stages`: which stage, how it runs, and its options."""

    model_config = ConfigDict(extra="forbid")
    stage: str
    batch_size: int | None = Field(None, gt=0, description="Rows per batch; default: the stage's own.")
    concurrency: int | tuple[int, int] | None = Field(
        None, description="Workers of the stage: N, or [min, max] for an autoscaling actor pool (stages with "
        "setup() or GPUs); default: one per CPU share, one per GPU for GPU stages.",
    )
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("concurrency")
    @classmethod
    def _workers(cls, value: int | tuple[int, int] | None) -> int | tuple[int, int] | None:
        if isinstance(value, tuple):
            low, high = value
            if not 1 <= low <= high:
                raise ValueError(f"`concurrency` [min, max] needs 1 <= min <= max, got [{low}, {high}]")
        elif value is not None and value < 1:
            raise ValueError(f"`concurrency` must be >= 1, got {value}")
        return value


class SinkConfig(BaseModel):
    """Where and how the WebDataset shards are written."""

    model_config = ConfigDict(extra="forbid")
    max_samples: int = Field(1000, gt=0, description="Samples per shard at most; 1000 keeps shards streamable.")
    max_bytes: int = Field(
        1_000_000_000, gt=0, description="Bytes of sample files per shard at most (a single larger sample gets a shard of its own); "
        "1 GB streams well from object stores."
    )
    bucket_column: str | None = Field(
        None, description="Write shards under shards/<value>/ per value of this column (aspect buckets)."
    )
    bucket_path: str | None = Field(
        None, description="Write shards under shards/<path>/, the path made from row columns, e.g. "
        "\"{bucket}/f{frame_count}\" -> shards/640x360/f121/: one resolution and frame count per folder, so a "
        "training batch read from one folder has one shape. Replaces `bucket_column`.",
    )

    @model_validator(mode="after")
    def _one_bucket_rule(self) -> SinkConfig:
        if self.bucket_column is not None and self.bucket_path is not None:
            raise ValueError("set `bucket_column` or `bucket_path`, not both; fix: keep `bucket_path`, "
                             f"e.g. \"{{{self.bucket_column}}}/...\"")
        if self.bucket_path is not None:
            bucket_fields(self.bucket_path)
        return self

    @property
    def bucket_template(self) -> str | None:
        """The shard folder template: `bucket_path`, or `{bucket_column}`; None when shards are not bucketed."""
        return self.bucket_path if self.bucket_path is not None else (
            f"{{{self.bucket_column}}}" if self.bucket_column is not None else None)


def bucket_fields(template: str) -> list[str]:
    """The column names a `bucket_path` template reads; ValueError naming the problem when it is malformed."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"`bucket_path` {template!r} is not a valid template ({exc}); "
                         "fix: name columns in braces, e.g. \"{bucket}/f{frame_count}\"") from None
    names = [name for _, name, _, _ in parsed if name is not None]
    if not names or any(not name.isidentifier() for name in names):
        raise ValueError(f"`bucket_path` {template!r} must name columns in braces, e.g. \"{{bucket}}/f{{frame_count}}\"")
    return names


class RayConfig(BaseModel):
    """How the job runs on Ray: where (embedded by default), and when a stalled run gives up."""

    model_config = ConfigDict(extra="forbid")
    address: str | None = Field(None, description="Address of an existing cluster; None starts Ray in-process.")
    num_cpus: int | None = Field(None, gt=0, description="CPUs for embedded Ray; default: all of this machine's.")
    stall_timeout: float | None = Field(
        1800, ge=0, description="Seconds without progress (no batch of any stage done, no block written to shards, "
        "no call of a global stage done) after which the run stops, naming the stuck stage and task, and exits "
        "non-zero; a rerun resumes. 1800 s lies far above the longest quiet spell of a healthy job (a large model "
        "loading on a cold node, one slow GPU batch) and still frees a hung cluster within the hour. 0 or null: "
        "wait forever.",
    )
    small_global_mb: float = Field(
        64, ge=0, description="A dedup stage whose input segment is at most this many MB of Parquet runs as one "
        "task on one worker instead of as shuffles over the cluster: on a few thousand rows the shuffles' "
        "start-up is most of the stage's time. The result is the same either way. 0: always over the cluster.")


class JobConfig(BaseModel):
    """A whole job: input, output, the ordered stages and the sink."""

    model_config = ConfigDict(extra="forbid")
    input: str = Field(description="A folder, a csv/jsonl/parquet manifest, or an s3:// prefix.")
    output: str = Field(description="Output folder or s3:// prefix.")
    plugins: list[str] = Field(default_factory=list, description="Modules to import for their stages.")
    stages: list[StageEntry] = Field(min_length=1)
    sink: SinkConfig = Field(default_factory=SinkConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @field_validator("input")
    @classmethod
    def _one_spelling(cls, value: str) -> str:
        return normalize_input(value)


def normalize_input(uri: str) -> str:
    """One spelling per input: a local path made absolute and real (`sample`, `sample/`, `/abs/sample` are one).

    Keys hash each source's path as listed, so two spellings of one folder would
    otherwise give every file two keys. s3:// URIs are kept as given.
    """
    if not uri.strip() or uri.startswith("s3://"):
        return uri
    return os.path.realpath(uri.removeprefix("file://"))


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The option names of the (nested) model at `loc`; none where `loc` leaves the models."""
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _format_validation(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> list[str]:
    errors = exc.errors()
    problems = []
    suggested: set[tuple[Any, ...]] = set()
    for err in errors:
        if err["type"] != "extra_forbidden":
            continue
        known = _fields_at(model, err["loc"][:-1])
        close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
        hint = (f"did you mean `{close[0]}`?" if close else
                f"valid options here: {', '.join(known)}" if known else "remove it")
        problems.append(f"`{_where(prefix, err['loc'])}`: unknown option; {hint}")
        if close:
            suggested.add((*err["loc"][:-1], close[0]))
    for err in errors:
        if err["type"] == "missing" and tuple(err["loc"]) not in suggested:
            # A misspelt required option is reported once, as the typo, not again as missing.
            problems.append(f"`{_where(prefix, err['loc'])}` is required; add it")
        elif err["type"] not in ("missing", "extra_forbidden"):
            problems.append(f"`{_where(prefix, err['loc'])}`: {err['msg']}, got {err.get('input')!r}")
    return problems


def _where(prefix: str, loc: tuple[Any, ...]) -> str:
    dotted = ".".join(str(part) for part in loc)
    return f"{prefix}{dotted}" if dotted else prefix.rstrip(".") or "config"


def parse_entry(raw: Any, index: int) -> StageEntry:
    """A stage entry from its YAML form: `{stage: NAME, <runner keys>, <options>}`."""
    if isinstance(raw, str):
        raw = {"stage": raw}
    if not isinstance(raw, dict) or "stage" not in raw:
        raise ConfigError([f"`stages[{index}]` must be a mapping with a `stage` key, got {raw!r}"])
    runner_part = {k: v for k, v in raw.items() if k in ENTRY_KEYS}
    runner_part["options"] = {k: v for k, v in raw.items() if k not in ENTRY_KEYS}
    try:
        return StageEntry.model_validate(runner_part)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, StageEntry, f"stages[{index}].")) from None


def parse_config(raw: Any, *, input: str | None = None, output: str | None = None) -> JobConfig:
    """Validate a loaded YAML document; `input` and `output` override the file's values."""
    if not isinstance(raw, dict):
        raise ConfigError([f"a job config must be a YAML mapping, got {type(raw).__name__}"])
    raw = dict(raw)
    if input is not None:
        raw["input"] = input
    if output is not None:
        raw["output"] = output
    problems: list[str] = []
    entries: list[StageEntry] = []
    stage_list = raw.get("stages")
    if isinstance(stage_list, list):
        for i, item in enumerate(stage_list):
            try:
                entries.append(parse_entry(item, i))
            except ConfigError as exc:
                problems.extend(exc.problems)
        raw["stages"] = [e.model_dump() for e in entries]
    try:
        config = JobConfig.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_format_validation(exc, JobConfig))
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: str | Path, *, input: str | None = None, output: str | None = None) -> JobConfig:
    """Read and validate a YAML job config."""
    import yaml

    path = Path(path)
    fix = "fix: pass the path of a job config YAML, e.g. configs/quickstart.yaml"
    if path.is_dir():
        raise ConfigError([f"config {str(path)!r} is a folder, not a YAML file; {fix}"])
    if not path.is_file():
        raise ConfigError([f"config file {str(path)!r} does not exist; {fix}"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError([f"config {str(path)!r} is not a text file; {fix}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise ConfigError([f"config {str(path)!r} is not valid YAML{where}: {problem}; fix that line"]) from None
    if not isinstance(raw, dict):
        raise ConfigError([f"config {str(path)!r} holds a YAML {type(raw).__name__}, not a mapping of options "
                           f"(input, output, stages, ...); {fix}"])
    return parse_config(raw, input=input, output=output)
