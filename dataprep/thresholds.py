"""Filter thresholds for a report: which column each filter option bounds, and the values a job used.

A filter's reason code names the option it applied (`size:min_side`), which ties each
rejection to the threshold it failed; the job's config (`_work/job.json`) gives the values.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dataprep import paths, storage
from dataprep.finalize import reason_group

# Which column a filter option bounds, and from which side ("min": rows below it are dropped).
# A filter's reason code names the option (`size:min_side`), which ties a rejection to its threshold.
THRESHOLDS: dict[str, dict[str, tuple[str, str]]] = {
    "size_filter": {
        "min_side": ("short_side", "min"),
        "max_side": ("long_side", "max"),
        "min_seconds": ("duration", "min"),
        "max_seconds": ("duration", "max"),
        "max_aspect": ("aspect", "max"),
    },
}


def _aspect(w: Any, h: Any) -> Any:
    return np.maximum(w, h) / np.minimum(w, h)


# Columns computed from others, defined as size_filter measures them (aspect = longer / shorter side).
DERIVED: dict[str, tuple[tuple[str, ...], Callable[..., Any]]] = {
    "short_side": (("width", "height"), np.minimum),
    "long_side": (("width", "height"), np.maximum),
    "aspect": (("width", "height"), _aspect),
}


@dataclass(frozen=True)
class Threshold:
    """One filter option drawn on a histogram."""

    stage: str
    option: str
    value: float
    side: str  # "min" or "max": which side of the value the filter keeps
    rewritten_by: str | None = None  # a later stage that rewrites the column, so kept values were not checked


def job_stages(output: str) -> list[dict[str, Any]]:
    """The job's stages as its config gave them (`stage`, `options`), from `_work/job.json`; [] when absent."""
    uri = paths.under(output, paths.JOB_FILE)
    if not storage.exists(uri):
        return []
    return json.loads(storage.read_bytes(uri))["config"]["stages"]


def _job_plugins(output: str) -> list[str]:
    uri = paths.under(output, paths.JOB_FILE)
    return json.loads(storage.read_bytes(uri))["config"].get("plugins", []) if storage.exists(uri) else []


def stage_classes(output: str, stages: list[dict[str, Any]]) -> tuple[list[type | None], list[str]]:
    """The class of each configured stage (None where it cannot be loaded), and notes on those."""
    from dataprep.registry import Registry

    notes: list[str] = []
    try:
        registry = Registry(_job_plugins(output))
    except (ImportError, ValueError) as exc:
        notes.append(f"plugins not loaded ({exc}); their stages count as not splitting rows")
        registry = Registry()
    classes: list[type | None] = []
    for s in stages:
        try:
            classes.append(registry.get(s["stage"]))
        except Exception as exc:  # an uninstalled plugin must not stop the report
            notes.append(f"stage {s['stage']!r} not loaded ({exc}); the funnel counts it as not splitting rows")
            classes.append(None)
    return classes, notes


def thresholds(stages: list[dict[str, Any]], classes: list[type | None]) -> dict[str, list[Threshold]]:
    """Per column, the filter options that bound it (see `THRESHOLDS`), defaults included where the class is known."""
    out: dict[str, list[Threshold]] = {}
    for i, (s, cls) in enumerate(zip(stages, classes, strict=True)):
        for option, (column, side) in THRESHOLDS.get(s["stage"], {}).items():
            value = s.get("options", {}).get(option)
            if value is None and option not in s.get("options", {}) and cls is not None:
                # size_filter's min_side is 64 unless the config sets it: the default filtered too.
                value = cls.Params.model_fields[option].get_default(call_default_factory=True)
            if value is None:
                continue
            inputs = set(DERIVED[column][0]) if column in DERIVED else {column}
            later = next((stages[j]["stage"] for j in range(i + 1, len(stages))
                          if classes[j] is not None and inputs & set(classes[j].writes)), None)
            out.setdefault(column, []).append(Threshold(s["stage"], option, float(value), side, later))
    return out


def threshold_of(stage: str, reason: str) -> tuple[str, str] | None:
    """(column, option) a rejection by `stage` was decided on, when its reason code names a mapped option."""
    code = reason_group(reason).split(":", 1)[-1]
    mapped = THRESHOLDS.get(stage, {}).get(code)
    return (mapped[0], code) if mapped else None


def column_value(column: str, values: dict[str, Any]) -> float | None:
    """`column` (stored or derived) from one row's values, e.g. a ledger row's scores."""
    if column in DERIVED:
        inputs, fn = DERIVED[column]
        if any(not isinstance(values.get(c), (int, float)) or not values.get(c) for c in inputs):
            return None
        return float(fn(*(np.float64(values[c]) for c in inputs)))
    value = values.get(column)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
