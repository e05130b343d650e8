"""What an output folder has already committed, and clearing what a killed run left half-done.

Every input key ends in exactly one shard or in the ledger. A key is committed
when it is listed in a shard's `*.stats.json` or in a ledger part; a parent row
(a video split into clips) is done when all its children are committed.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

import pyarrow as pa

from dataprep import ledger, owner, paths, storage

log = logging.getLogger(__name__)
_LEFTOVER = re.compile(r"(\.partial|\.tmp-\d+)$")


def stats_files(output: str) -> list[str]:
    """URIs of every committed shard's stats file."""
    return [u for u in storage.list_files(paths.under(output, paths.SHARDS_DIR)) if u.endswith(".stats.json")]


def has_orphans(output: str, *, superseded: bool = True) -> bool:
    """Whether a killed run left anything uncommitted behind (and, with `superseded`, a key committed twice)."""
    return bool(clean_orphans(output, dry_run=True, superseded=superseded))


def clean_orphans(output: str, *, dry_run: bool = False, superseded: bool = True) -> list[str]:
    """Remove what no commit record covers, and superseded records that double a key; returns the files.

    Orphans: shards, manifest parts and temporary files a killed run left without a commit record;
    finding them lists files only. Superseded records (see `superseded_records`) need every
    committed key in this process: the runner asks for them only when `dataprep.resume` found
    a key in two records.
    """
    records = superseded_records(output) if superseded else []
    removed: list[str] = [u for record in records for u in record_files(output, record)]
    shard_files = storage.list_files(paths.under(output, paths.SHARDS_DIR))
    committed = {u[: -len(".stats.json")] for u in shard_files if u.endswith(".stats.json") and u not in removed}
    committed_names = {c.rsplit("/", 1)[-1] for c in committed}
    for uri in shard_files:
        if uri not in removed and (_LEFTOVER.search(uri) or (uri.endswith(".tar") and uri[: -len(".tar")] not in committed)):
            removed.append(uri)
    for uri in storage.list_files(paths.under(output, paths.MANIFEST_PARTS_DIR)):
        stem = uri.rsplit("/", 1)[-1].removesuffix(".parquet")
        if uri not in removed and (_LEFTOVER.search(uri) or (uri.endswith(".parquet") and stem not in committed_names)):
            removed.append(uri)
    for folder in (paths.LEDGER_PARTS_DIR, paths.LINEAGE_DIR):
        for uri in storage.list_files(storage.join(output, folder)):
            if _LEFTOVER.search(uri):
                removed.append(uri)
    if removed and not dry_run:
        for uri in removed:
            storage.remove(uri)
        log.info("removed %d files a previous run left uncommitted or committed twice", len(removed))
    return removed


@dataclass(frozen=True)
class Record:
    """A commit record: a shard's stats file or a ledger part, the run that wrote it, the keys it commits."""

    uri: str
    token: str | None
    keys: tuple[str, ...]


def commit_records(output: str) -> list[Record]:
    """Every commit record of `output`."""
    records = []
    for uri in stats_files(output):
        stats = json.loads(storage.read_bytes(uri))
        records.append(Record(uri, stats.get("token"), tuple(stats["keys"])))
    for uri in storage.list_files(paths.under(output, paths.LEDGER_PARTS_DIR)):
        if uri.endswith(".parquet"):
            table = storage.read_parquet(uri)
            records.append(Record(uri, ledger.part_token(table), tuple(table.column("key").to_pylist())))
    return records


def superseded_records(output: str) -> list[Record]:
    """Records that commit a key another record commits too, all but the one of the latest run.

    A worker of a superseded run can pass its owner check just before a new run takes over
    and write its record after the new run has read what is committed; the new run then
    commits the same keys again. Of the records holding a key twice, the latest owner's is
    kept; the others go, and their other keys become uncommitted again, so the run that
    removes them processes those keys anew: each key ends committed once.
    """
    order = owner.succession(output)
    records = sorted(commit_records(output), key=lambda r: (order.get(r.token, -1), r.uri), reverse=True)
    seen: set[str] = set()
    superseded = []
    for record in records:  # latest first: a record loses when a later one already holds one of its keys
        if seen.intersection(record.keys):
            superseded.append(record)
        else:
            seen.update(record.keys)
    return superseded


def record_files(output: str, record: Record) -> list[str]:
    """The files that go with a record: a shard's tar and manifest part, or the ledger part itself."""
    if not record.uri.endswith(".stats.json"):
        return [record.uri]
    base = record.uri[: -len(".stats.json")]
    index = paths.shard_index(record.uri)
    return [record.uri, base + ".tar", paths.under(output, paths.manifest_part(index))]


def next_shard_index(output: str) -> int:
    """One more than the highest shard number in use."""
    numbers = [paths.shard_index(uri) for uri in storage.list_files(paths.under(output, paths.SHARDS_DIR))]
    return max((n for n in numbers if n is not None), default=-1) + 1


def committed_keys(output: str) -> set[str]:
    """Keys already in a committed shard or in the ledger, plus parents whose children all are."""
    keys = {key for record in commit_records(output) for key in record.keys}
    return keys | done_parents(output, keys)


def done_parents(output: str, committed: set[str]) -> set[str]:
    """Parents every one of whose children is committed or itself a done parent."""
    children: dict[str, set[str]] = {}
    for uri in storage.list_files(paths.under(output, paths.LINEAGE_DIR)):
        if uri.endswith(".parquet"):
            table = storage.read_parquet(uri)
            for parent, kids in zip(table.column("parent").to_pylist(), table.column("children").to_pylist(), strict=True):
                children.setdefault(parent, set()).update(kids)
    return parents_done(children, committed)


def parents_done(children: dict[str, set[str]], committed: set[str]) -> set[str]:
    """Of the parents in `children` (parent -> child keys), those whose children are all committed or done."""
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
    # Named by parents and children both: a part written again with the same content replaces itself, and
    # parts that differ (another batch or stage with the same parent) sit beside each other and are unioned.
    content = "\0".join(f"{p}\1{chr(2).join(sorted(c))}" for p, c in sorted(zip(parents, children, strict=True)))
    digest = hashlib.sha1(content.encode("utf-8")).hexdigest()[:20]
    data = storage.parquet_bytes(table)
    owner.assert_owner(output, token)
    storage.write_atomic(paths.under(output, paths.lineage_part(digest)), data)
