"""The shape of the code: the core has no import cycle, never imports the built-in stages, and installs
under the dataprep namespace only."""

from __future__ import annotations

import ast
import importlib.util
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "dataprep"
# Where the repository's folders are installed (pyproject's package-dir).
NAMESPACE = {"stages": "dataprep.stages", "jobs": "dataprep.jobs"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] in NAMESPACE:
        parts[0] = NAMESPACE[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Absolute module names `path` imports (at module level only, or anywhere in it)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def core_graph() -> dict[str, set[str]]:
    """Module-level imports between the core's modules."""
    modules = {_module_name(p): p for p in CORE.rglob("*.py")}
    return {name: {m for m in _imports(path, top_level_only=True) if m in modules and m != name}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_core_has_no_import_cycle():
    graph = core_graph()
    assert len(graph) > 15, "the core's modules were not found"
    cycle = find_cycle(graph)
    print(f"core modules: {len(graph)}, import edges: {sum(map(len, graph.values()))}, cycle: {cycle}")
    assert cycle is None, f"import cycle in the core: {' -> '.join(cycle)}"


def test_cycle_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_core_never_imports_the_built_in_stages_or_jobs():
    offenders = {}
    for path in CORE.rglob("*.py"):
        bad = {m for m in _imports(path, top_level_only=False)
               if m.split(".")[0] in ("stages", "jobs") or m.startswith(("dataprep.stages", "dataprep.jobs"))}
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    print(f"core files checked: {len(list(CORE.rglob('*.py')))}, offenders: {offenders}")
    assert not offenders


def test_every_package_folder_is_installed_under_the_dataprep_namespace():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    assert all(p == "dataprep" or p.startswith("dataprep.") for p in listed), listed
    folders = {_module_name(init.parent / "__init__.py")
               for top in ("dataprep", "stages", "jobs") for init in (ROOT / top).rglob("__init__.py")}
    assert folders == listed, f"package folders not listed in pyproject: {folders - listed}; stale: {listed - folders}"
    assert config["package-dir"] == {v: k for k, v in NAMESPACE.items()}


@pytest.mark.parametrize("name", sorted(NAMESPACE.values()))
def test_namespaced_packages_import_from_the_repository(name):
    spec = importlib.util.find_spec(name)
    assert spec is not None and Path(spec.origin).parent.parent == ROOT


def test_wheel_has_no_top_level_stages_or_jobs(tmp_path):
    import shutil
    import subprocess
    import sys
    import zipfile

    # Build from a copy: setuptools leaves build/ and *.egg-info beside the sources it builds.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("dataprep", "stages", "jobs"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(source)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("dataprep-*.whl")
    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"dataprep"}
    names = zipfile.ZipFile(wheel).namelist()
    assert "dataprep/stages/video/standardize.py" in names and "dataprep/jobs/run_job.py" in names
