"""What an output folder has already committed, and clearing what a killed run left half-done.

Every input key ends in exactly one shard or in the ledger. A key is committed
when it is listed in a shard's `*.stats.json` or in a ledger part; a parent row
(a video split into clips) is done when all its children are committed.
"""

from __future__ import annotations

import json
import logging
import re

import pyarrow as pa

from dataprep import owner, paths, storage

log = logging.getLogger(__name__)
_SHARD_INDEX = re.compile(r"shard-(\d+)\.(?:tar|stats\.json)$")
_LEFTOVER = re.compile(r"(\.partial|\.tmp-\d+)$")


def stats_files(output: str) -> list[str]:
    """URIs of every committed shard's stats file."""
    return [u for u in storage.list_files(paths.under(output, paths.SHARDS_DIR)) if u.endswith(".stats.json")]


def has_orphans(output: str) -> bool:
    """Whether a killed run left anything uncommitted behind."""
    return bool(clean_orphans(output, dry_run=True))


def clean_orphans(output: str, *, dry_run: bool = False) -> list[str]:
    """Remove shards, manifest parts and temporary files that have no commit record; returns them."""
    removed: list[str] = []
    shard_files = storage.list_files(paths.under(output, paths.SHARDS_DIR))
    committed = {u[: -len(".stats.json")] for u in shard_files if u.endswith(".stats.json")}
    committed_names = {c.rsplit("/", 1)[-1] for c in committed}
    for uri in shard_files:
        if _LEFTOVER.search(uri) or (uri.endswith(".tar") and uri[: -len(".tar")] not in committed):
            removed.append(uri)
    for uri in storage.list_files(paths.under(output, paths.MANIFEST_PARTS_DIR)):
        stem = uri.rsplit("/", 1)[-1].removesuffix(".parquet")
        if _LEFTOVER.search(uri) or (uri.endswith(".parquet") and stem not in committed_names):
            removed.append(uri)
    for folder in (paths.LEDGER_PARTS_DIR, paths.LINEAGE_DIR):
        for uri in storage.list_files(storage.join(output, folder)):
            if _LEFTOVER.search(uri):
                removed.append(uri)
    if removed and not dry_run:
        for uri in removed:
            storage.remove(uri)
        log.info("removed %d files a previous run left uncommitted", len(removed))
    return removed


def next_shard_index(output: str) -> int:
    """One more than the highest shard number in use."""
    highest = -1
    for uri in storage.list_files(paths.under(output, paths.SHARDS_DIR)):
        m = _SHARD_INDEX.search(uri)
        if m:
            highest = max(highest, int(m.group(1)))
    return highest + 1


def committed_keys(output: str) -> set[str]:
    """Keys already in a committed shard or in the ledger, plus parents whose children all are."""
    keys: set[str] = set()
    for uri in stats_files(output):
        keys.update(json.loads(storage.read_bytes(uri))["keys"])
    for uri in storage.list_files(paths.under(output, paths.LEDGER_PARTS_DIR)):
        if uri.endswith(".parquet"):
            keys.update(storage.read_parquet(uri).column("key").to_pylist())
    return keys | done_parents(output, keys)


def done_parents(output: str, committed: set[str]) -> set[str]:
    """Parents every one of whose children is committed or itself a done parent."""
    children: dict[str, set[str]] = {}
    for uri in storage.list_files(paths.under(output, paths.LINEAGE_DIR)):
        if uri.endswith(".parquet"):
            table = storage.read_parquet(uri)
            for parent, kids in zip(table.column("parent").to_pylist(), table.column("children").to_pylist(), strict=True):
                children.setdefault(parent, set()).update(kids)
    done: set[str] = set()
    changed = True
    while changed:
        changed = False
        for parent, kids in children.items():
            if parent not in done and all(k in committed or k in done for k in kids):
                done.add(parent)
                changed = True
    return done


def write_lineage(output: str, parents: list[str], children: list[list[str]], *, token: str | None = None) -> None:
    """Record which rows a split stage made from which parent, so a rerun can skip whole parents."""
    import hashlib

    if not parents:
        return
    table = pa.table({"parent": parents, "children": children}, schema=pa.schema(
        [("parent", pa.string()), ("children", pa.list_(pa.string()))]))
    digest = hashlib.sha1("\0".join(sorted(parents)).encode("utf-8")).hexdigest()[:20]
    data = storage.parquet_bytes(table)
    owner.assert_owner(output, token)
    storage.write_atomic(paths.under(output, paths.lineage_part(digest)), data)
