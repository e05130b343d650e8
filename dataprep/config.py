"""The job config: YAML validated by pydantic at the boundary, plain objects inside."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


class RayConfig(BaseModel):
    """How to reach Ray: embedded by default."""

    model_config = ConfigDict(extra="forbid")
    address: str | None = Field(None, description="Address of an existing cluster; None starts Ray in-process.")
    num_cpus: int | None = Field(None, gt=0, description="CPUs for embedded Ray; default: all of this machine's.")


class JobConfig(BaseModel):
    """A whole job: input, output, the ordered stages and the sink."""

    model_config = ConfigDict(extra="forbid")
    input: str = Field(description="A folder, a csv/jsonl/parquet manifest, or an s3:// prefix.")
    output: str = Field(description="Output folder or s3:// prefix.")
    plugins: list[str] = Field(default_factory=list, description="Modules to import for their stages.")
    stages: list[StageEntry] = Field(min_length=1)
    sink: SinkConfig = Field(default_factory=SinkConfig)
    ray: RayConfig = Field(default_factory=RayConfig)


def _format_validation(exc: ValidationError, prefix: str = "") -> list[str]:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"])
        where = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "config"
        if err["type"] == "extra_forbidden":
            problems.append(f"`{where}`: unknown option; remove it or check its spelling")
        elif err["type"] == "missing":
            problems.append(f"`{where}` is required; add it")
        else:
            problems.append(f"`{where}`: {err['msg']}, got {err.get('input')!r}")
    return problems


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
        raise ConfigError(_format_validation(exc, f"stages[{index}].")) from None


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
        problems.extend(_format_validation(exc))
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: str | Path, *, input: str | None = None, output: str | None = None) -> JobConfig:
    """Read and validate a YAML job config."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config file {str(path)!r} does not exist"])
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from None
    return parse_config(raw, input=input, output=output)
