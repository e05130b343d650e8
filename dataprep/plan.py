"""Checking a whole job before it runs: stages exist, options are valid, columns are there."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace

from pydantic import ValidationError

from dataprep import storage
from dataprep.config import JobConfig, StageEntry, bucket_fields
from dataprep.errors import ConfigError
from dataprep.members import members_problems, sink_problems
from dataprep.registry import Registry, StageClass, UnknownStageError
from dataprep.stage import Filter, GlobalStage, Resources, Source, Stage, StageParams

# Entry keys that only stages run by the runner's map operators can honour.
_RUNNER_KEYS = ("batch_size", "concurrency", "resources")


@dataclass
class PlannedStage:
    """A stage of the plan: its class, validated options and how it runs."""

    index: int
    name: str
    cls: StageClass
    params: StageParams
    batch_size: int
    resources: Resources
    concurrency: int | tuple[int, int] | None
    # What an instance with these options reads, writes and puts in shards (options may add columns).
    reads: tuple[str, ...] = field(init=False)
    writes: tuple[str, ...] = field(init=False)
    members: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        stage = self.instantiate()
        self.reads, self.writes, self.members = tuple(stage.reads), tuple(stage.writes), dict(stage.members)

    def instantiate(self) -> Stage:
        """A fresh instance of the stage with its options and the resources its workers get."""
        stage = self.cls(self.params)
        # The config may override the class's resources; the stage sizes its threads from these.
        stage.resources = self.resources
        return stage

    @property
    def score_columns(self) -> tuple[str, ...]:
        """Columns recorded with a row this stage rejects: a filter's scores, else what the stage writes."""
        return self.cls.score_columns() if issubclass(self.cls, Filter) else self.writes

    @property
    def is_global(self) -> bool:
        """Whether the stage needs all rows at once."""
        return issubclass(self.cls, GlobalStage)


@dataclass
class Plan:
    """A validated job: the source, then the stages in order."""

    config: JobConfig
    source: PlannedStage
    stages: list[PlannedStage]
    columns: list[str] = field(default_factory=list)

    @property
    def all_stages(self) -> list[PlannedStage]:
        """The source followed by every stage."""
        return [self.source, *self.stages]


def _option_problems(name: str, index: int, cls: StageClass, exc: ValidationError) -> list[str]:
    known = list(cls.Params.model_fields)
    problems = []
    for err in exc.errors():
        option = ".".join(str(p) for p in err["loc"]) or "options"
        where = f"stage {name!r} (stages[{index}]), option `{option}`"
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][0]), known, n=1)
            hint = f"did you mean `{close[0]}`?" if close else f"valid options: {', '.join(known) or 'none'}"
            problems.append(f"{where}: unknown option; {hint}")
        else:
            problems.append(f"{where}: {err['msg']}, got {err.get('input')!r}")
    return problems


def _runner_key_problems(entry: StageEntry, index: int, cls: StageClass) -> list[str]:
    """Options the stage's kind cannot honour: refused rather than ignored."""
    where = f"stage {entry.stage!r} (stages[{index}])"
    set_keys = entry.model_dump(include=set(_RUNNER_KEYS), exclude_none=True)
    given = [k for k in _RUNNER_KEYS if set_keys.get(k) not in (None, {})]
    if issubclass(cls, (GlobalStage, Source)) and given:
        kind = "a global stage, whose executor spreads its work" if issubclass(cls, GlobalStage) \
            else "the source, which lists the input on the driver"
        return [f"{where} is {kind}: `{'`, `'.join(given)}` cannot apply to it; fix: remove them"]
    if isinstance(entry.concurrency, tuple) and not cls.needs_actor() and not entry.resources.gpus:
        return [f"{where}: `concurrency` [min, max] needs an actor pool, but this stage runs as tasks "
                f"(no setup(), no GPUs); fix: give one number, e.g. `concurrency: {entry.concurrency[1]}`"]
    return []


def _plan_entry(entry: StageEntry, index: int, cls: StageClass, tiny_models: str | None) -> PlannedStage:
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, StageParams)):
        raise ConfigError([f"stage {entry.stage!r} ({cls.__module__}.{cls.__qualname__}): its Params must subclass "
                           "dataprep.stage.StageParams, so unknown options are refused; fix the stage's code"])
    problems = _runner_key_problems(entry, index, cls)
    try:
        params = cls.Params.model_validate(entry.options)
    except ValidationError as exc:
        problems += _option_problems(entry.stage, index, cls, exc)
    if problems:
        raise ConfigError(problems)
    if tiny_models is not None:
        params = _tiny(entry, index, cls, params, tiny_models)
    resources = replace(cls.resources, **entry.resources.model_dump(exclude_none=True))
    return PlannedStage(
        index=index,
        name=entry.stage,
        cls=cls,
        params=params,
        batch_size=entry.batch_size or cls.batch_size,
        resources=resources,
        concurrency=entry.concurrency,
    )


def _writers_of(column: str, registry: Registry) -> list[str]:
    out = []
    for name in registry.names():
        try:
            if column in registry.get(name).writes:
                out.append(name)
        except Exception:  # a broken third-party entry point must not hide the real problem
            continue
    return out


def _check_input(uri: str) -> list[str]:
    if storage.is_s3(uri):
        return []
    if not storage.exists(uri):
        return [f"`input`: {uri!r} does not exist; fix: pass --input with a folder or manifest file"]
    return []


def _tiny(entry: StageEntry, index: int, cls: StageClass, params: StageParams, cache_dir: str) -> StageParams:
    try:
        return cls(params).tiny_params(cache_dir)
    except (ValueError, OSError) as exc:
        raise ConfigError([f"stage {entry.stage!r} (stages[{index}]): cannot build its tiny models ({exc}); "
                           "fix: name a model family dataprep can build tiny, or run without --tiny-models"]) from None


def build_plan(config: JobConfig, registry: Registry | None = None, *, tiny_models: str | None = None) -> Plan:
    """Validate every stage and the columns each reads; raise ConfigError listing all problems.

    With `tiny_models` (a folder), every model a stage names is swapped for a tiny random one of
    the same family built there, so a job can be tried offline with no checkpoint.
    """
    problems: list[str] = []
    try:
        registry = registry or Registry(config.plugins)
    except (ImportError, ValueError) as exc:
        raise ConfigError([f"`plugins`: {exc}"]) from None
    planned: list[PlannedStage] = []
    for i, entry in enumerate(config.stages):
        try:
            cls = registry.get(entry.stage)
        except UnknownStageError as exc:
            problems.append(f"stages[{i}]: {exc}")
            continue
        try:
            planned.append(_plan_entry(entry, i, cls, tiny_models))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)

    if not issubclass(planned[0].cls, Source):
        problems.append(
            f"stages[0] is {planned[0].name!r}, but a job starts with a source stage; "
            "fix: put `- stage: ingest` first"
        )
    available: list[str] = []
    for p in planned:
        if p.index > 0 and issubclass(p.cls, Source):
            problems.append(f"stage {p.name!r} (stages[{p.index}]) is a source; only stages[0] may be one")
        problems.extend(members_problems(p))
        problems.extend(f"stage {p.name!r} (stages[{p.index}]): {problem}" for problem in p.instantiate().preflight())
        for column in p.reads:
            if column not in available:
                writers = _writers_of(column, registry)
                fix = (
                    f"add {' or '.join(repr(w) for w in writers)} before it"
                    if writers
                    else "no known stage writes it"
                )
                problems.append(
                    f"stage {p.name!r} (stages[{p.index}]) reads column {column!r}, "
                    f"which no earlier stage writes; fix: {fix}"
                )
        available.extend(c for c in p.writes if c not in available)
    template = config.sink.bucket_template
    option = "bucket_path" if config.sink.bucket_path is not None else "bucket_column"
    for bucket in bucket_fields(template) if template is not None else []:
        if bucket not in available:
            problems.append(f"`sink.{option}` reads column {bucket!r}, which no stage writes; "
                            "fix: remove it or add its stage")
    problems.extend(sink_problems(available, planned))
    problems.extend(_check_input(config.input))
    if problems:
        raise ConfigError(problems)
    return Plan(config=config, source=planned[0], stages=planned[1:], columns=available)
