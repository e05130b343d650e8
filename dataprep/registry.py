"""Finding stages by name: the `dataprep.stages` entry-point group and `plugins:` modules.

Built-in stages are found the same way a user's package is: through entry points.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from importlib.metadata import entry_points
from types import ModuleType

from dataprep.stage import Filter, GlobalStage, Source, Stage

ENTRY_POINT_GROUP = "dataprep.stages"
StageClass = type[Stage]
_BASES = (Stage, Filter, GlobalStage, Source)


class UnknownStageError(KeyError):
    """A config names a stage that no entry point or plugin provides."""

    def __init__(self, name: str, known: list[str]) -> None:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "run `dataprep stages` to list them"
        self.message = f"unknown stage {name!r}; {hint}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def _is_stage_class(obj: object) -> bool:
    return (
        inspect.isclass(obj)
        and issubclass(obj, Stage)
        and obj not in _BASES
        and any(isinstance(vars(c).get("name"), str) for c in obj.__mro__)
    )


def stages_in_module(module: ModuleType) -> dict[str, StageClass]:
    """Stage classes defined in `module` (not merely imported into it), by name."""
    return {
        obj.name: obj
        for obj in vars(module).values()
        if _is_stage_class(obj) and obj.__module__ == module.__name__
    }


class Registry:
    """Stage classes by name, loaded lazily from entry points plus plugin modules."""

    def __init__(self, plugins: list[str] | tuple[str, ...] = ()) -> None:
        self._entry_points = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        self._loaded: dict[str, StageClass] = {}
        for module_name in plugins:
            self.add_module(module_name)

    def add_module(self, module_name: str) -> None:
        """Import a plugin module and register the stages it defines."""
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ImportError(
                f"plugin module {module_name!r} cannot be imported ({exc}); "
                "fix: install its package or put its folder on PYTHONPATH"
            ) from exc
        found = stages_in_module(module)
        if not found:
            raise ValueError(
                f"plugin module {module_name!r} defines no stage; a stage is a subclass of "
                "dataprep.stage.Stage, Filter, GlobalStage or Source with a `name`"
            )
        self._loaded.update(found)

    def names(self) -> list[str]:
        """Every stage name known, sorted."""
        return sorted(set(self._entry_points) | set(self._loaded))

    def get(self, name: str) -> StageClass:
        """The stage class registered as `name`."""
        if name in self._loaded:
            return self._loaded[name]
        ep = self._entry_points.get(name)
        if ep is None:
            raise UnknownStageError(name, self.names())
        cls = ep.load()
        if not _is_stage_class(cls):
            raise TypeError(f"entry point {name!r} ({ep.value}) is not a dataprep stage class")
        self._loaded[name] = cls
        return cls
