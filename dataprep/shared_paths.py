"""Checking that every node of a Ray cluster sees a job's local input and output paths.

On a cluster, workers on other machines read the input and write shards themselves. A local path
that only the driver's machine has (not a shared filesystem mounted at the same place on every
node) would fail on those workers row by row, or write shards that the driver never sees. This
check runs one tiny task on each alive node before any work and names the nodes that cannot see.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from dataprep import storage

# Names of a folder compared between the driver and a node: enough to tell two different folders apart.
_LISTED = 20
_TIMEOUT_S = 60.0


def _fingerprint(path: str) -> Any:
    """What the driver sees at `path`: a file's size, a folder's first names, or None when absent."""
    p = Path(path)
    if p.is_file():
        return ("file", p.stat().st_size)
    if p.is_dir():
        return ("dir", sorted(os.listdir(p))[:_LISTED])
    return None


def _seen(paths: dict[str, Any]) -> dict[str, Any]:
    return {path: _fingerprint(path) for path in paths}


def unseen_problems(input_uri: str, output: str) -> list[str]:
    """One problem per local path that an alive Ray node sees differently from this driver, with the fix."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    local = [storage.local_path(u) for u in (input_uri, output) if not storage.is_s3(u)]
    if not local:
        return []
    output = storage.local_path(output)
    marker = None
    if output in local:
        # A file only this run wrote: a node with its own folder at the same path does not have it.
        marker = os.path.join(output, f".reach-{secrets.token_hex(8)}")
        Path(output).mkdir(parents=True, exist_ok=True)
        Path(marker).write_text("dataprep reachability check\n", encoding="utf-8")
    try:
        expected = _seen({p: None for p in [*local, *([marker] if marker else [])]})
        nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
        probe = ray.remote(num_cpus=0, max_retries=0)(_seen)
        refs = {n["NodeManagerAddress"]: probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(expected) for n in nodes}
        problems = []
        for address, ref in refs.items():
            got = ray.get(ref, timeout=_TIMEOUT_S)
            for path, want in expected.items():
                if got.get(path) != want:
                    shown = output if path == marker else path
                    role = "`output`" if shown == output else "`input`"
                    problems.append(
                        f"{role} {shown!r} is a local path that Ray node {address} does not see as this machine "
                        "does; fix: use an s3:// URI, or a shared filesystem mounted at the same path on every node")
        return sorted(set(problems))
    finally:
        if marker:
            Path(marker).unlink(missing_ok=True)
