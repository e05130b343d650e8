"""The rejects ledger: every removed row, with the stage, the reason and its scores.

Rows are written as soon as they are rejected, one Parquet part per batch under
`OUTPUT/_work/rejects/`; a part is named by a hash of its content, so a retried
task writes the same file again instead of a second copy.
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from dataprep import columns, owner, paths, storage
from dataprep.arrow import column_or_none

SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("source", pa.string()),
        ("parent_key", pa.string()),
        ("stage", pa.string()),
        ("stage_index", pa.int32()),
        ("reason", pa.string()),
        ("duplicate_of", pa.string()),
        ("scores", pa.string()),
    ]
)

# Schema metadata of a ledger part: the token of the run that wrote it.
TOKEN_KEY = "dataprep.token"


def part_token(table: pa.Table) -> str | None:
    """The token of the run that wrote a ledger part (None when unknown)."""
    token = (table.schema.metadata or {}).get(TOKEN_KEY.encode("ascii"), b"").decode("ascii")
    return token or None


def rejects_table(batch: pa.Table, *, stage: str, stage_index: int, score_columns: tuple[str, ...]) -> pa.Table:
    """Ledger rows for the rows of `batch` whose `_reject` is set."""
    reasons = column_or_none(batch, columns.REJECT)
    keys, sources, parents, dups = (column_or_none(batch, c) for c in (columns.KEY, columns.SOURCE, columns.PARENT,
                                                                        columns.DUPLICATE_OF))
    present = [c for c in score_columns if c in batch.column_names]
    score_values = {c: column_or_none(batch, c) for c in present}
    rows = []
    for i, reason in enumerate(reasons):
        if reason is None:
            continue
        scores = {c: columns.json_value(score_values[c][i]) for c in present if score_values[c][i] is not None}
        rows.append(
            {
                "key": keys[i],
                "source": sources[i],
                "parent_key": parents[i],
                "stage": stage,
                "stage_index": stage_index,
                "reason": reason,
                "duplicate_of": dups[i],
                "scores": json.dumps(scores, sort_keys=True, default=str),
            }
        )
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def write_part(output: str, table: pa.Table, *, token: str | None = None) -> str | None:
    """Commit ledger rows, if the run holding `token` still owns `output`; returns the part's URI."""
    if table.num_rows == 0:
        return None
    table = table.sort_by("key")
    digest = hashlib.sha1()
    for key in table.column("key").to_pylist():
        digest.update(key.encode("utf-8") + b"\0")
    stage_index = table.column("stage_index")[0].as_py()
    uri = paths.under(output, paths.ledger_part(stage_index, digest.hexdigest()[:20]))
    data = storage.parquet_bytes(table.replace_schema_metadata({TOKEN_KEY: token or ""}))
    owner.assert_owner(output, token)
    storage.write_atomic(uri, data)
    return uri
