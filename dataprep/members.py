"""How the columns of a row become the files of one WebDataset sample, and which reach the manifest.

Every column reaches the shard, the manifest or both; nothing is dropped:

    media (+ media_ext)          KEY.<media_ext>        the clip or image bytes
    caption, caption_*           KEY.txt, KEY.caption_*.txt
    numbers, strings, booleans   KEY.json and the manifest
    numeric lists, tensors       KEY.<column>.npy       dtype and shape kept
    binary                       KEY.<column>.bin
    list of binary               KEY.<column>.<i>.bin   (e.g. JPEG thumbnails)
    anything else (structs, ...) KEY.json

A stage overrides the default of a column it writes with `members`, e.g.
`{"latent": "latent.npy", "frames": "frames.jpg", "caption_vlm": "vlm.txt"}`; for a
list column the item index goes before the extension (`frames.0.jpg`).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from dataprep import columns

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa


class Writer(Protocol):
    """A stage, or a planned stage: what it writes and how its columns go into a sample."""

    name: str
    writes: tuple[str, ...]
    members: dict[str, str]


_SUFFIX = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
# Members the sink writes itself, whatever the stages declare.
_OWN = ("json",)
# Columns that steer the sink and are not data of their own.
_STEERING = (columns.MEDIA_EXT, *columns.RESERVED)


def default_member(column: str) -> str | None:
    """The member a column gets by its name alone, or None when its type decides (at write time)."""
    if column == columns.CAPTION:
        return "txt"
    if column.startswith(columns.CAPTION + "_"):
        return f"{column}.txt"
    return None


def members_problems(stage: Writer) -> list[str]:
    """What is wrong with a stage's `members` declaration."""
    where = f"stage {stage.name!r}"
    problems = []
    for column, suffix in stage.members.items():
        if column not in stage.writes:
            problems.append(f"{where} declares member {suffix!r} for column {column!r}, which it does not write; "
                            f"fix: add {column!r} to its `writes` or remove the member")
        if not isinstance(suffix, str) or not _SUFFIX.match(suffix) or suffix in _OWN:
            problems.append(f"{where}: member {suffix!r} of column {column!r} is not a file suffix the sink can "
                            "write; fix: use lower-case words joined by dots, like 'latent.npy' (not 'json')")
    return problems


def declared_members(stages: Iterable[Writer]) -> dict[str, str]:
    """Column -> member for every column a stage declares or whose name decides; later stages win."""
    out: dict[str, str] = {}
    for stage in stages:
        for column in stage.writes:
            member = default_member(column)
            if member is not None:
                out[column] = member
        out.update(stage.members)
    return out


def sink_problems(available: list[str], stages: list[Writer]) -> list[str]:
    """Columns that would overwrite each other's member in a sample (so one would be lost)."""
    declared = declared_members(stages)
    owners: dict[str, list[str]] = {}
    for column in available:
        if column in _STEERING or column == columns.KEY:
            continue
        owners.setdefault(declared.get(column, f"{column}.*"), []).append(column)
    problems = []
    for member, names in owners.items():
        if len(names) > 1:
            problems.append(f"columns {', '.join(map(repr, names))} would all be written as member {member!r} of a "
                            "sample, and all but one lost; fix: give each its own suffix in the stage's `members`")
    return problems


def is_scalar(type_: pa.DataType) -> bool:
    """Whether a column holds one small value per row: metadata and scores for `.json` and the manifest."""
    import pyarrow as pa

    return (pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_boolean(type_)
            or pa.types.is_string(type_) or pa.types.is_large_string(type_))


def _is_numeric_array(type_: pa.DataType) -> bool:
    import pyarrow as pa

    if isinstance(type_, pa.BaseExtensionType):
        return _is_numeric_array(type_.storage_type) or type_.extension_name.endswith("tensor")
    if pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
        inner = type_.value_type
        return pa.types.is_integer(inner) or pa.types.is_floating(inner) or pa.types.is_boolean(inner) \
            or _is_numeric_array(inner)
    return False


def _is_binary(type_: pa.DataType) -> bool:
    import pyarrow as pa

    return pa.types.is_binary(type_) or pa.types.is_large_binary(type_) or pa.types.is_fixed_size_binary(type_)


def _is_binary_list(type_: pa.DataType) -> bool:
    import pyarrow as pa

    return (pa.types.is_list(type_) or pa.types.is_large_list(type_)) and _is_binary(type_.value_type)


def to_ndarray(array: pa.Array, i: int) -> np.ndarray | None:
    """Row `i` of a numeric list or tensor column as a numpy array of its dtype and shape (None when null)."""
    import numpy as np
    import pyarrow as pa

    if not array[i].is_valid:
        return None
    if isinstance(array.type, pa.BaseExtensionType):
        item = array.slice(i, 1)
        if hasattr(item, "to_numpy_ndarray"):
            return item.to_numpy_ndarray()[0]
        return np.asarray(item.to_numpy(zero_copy_only=False)[0])
    value: Any = array[i].values
    shape = [len(value)]
    while pa.types.is_list(value.type) or pa.types.is_large_list(value.type) or pa.types.is_fixed_size_list(value.type):
        lengths = set(pa.compute.list_value_length(value).to_pylist()) if len(value) else {0}
        if len(lengths) != 1:
            raise ValueError(f"a ragged list (inner lengths {sorted(lengths)}) is not an array; store one shape per row")
        shape.append(lengths.pop())
        value = value.flatten()
    return value.to_numpy(zero_copy_only=False).reshape(shape)


def npy_bytes(value: np.ndarray) -> bytes:
    """`value` as a `.npy` file."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, value, allow_pickle=False)
    return buf.getvalue()


def _encode(suffix: str, array: pa.Array, i: int) -> bytes:
    """Row `i` of a column as the bytes of a member with `suffix`."""
    if suffix.endswith(".npy") or suffix == "npy":
        if _is_binary(array.type):
            return array[i].as_py()  # already .npy bytes
        return npy_bytes(to_ndarray(array, i))
    value = array[i].as_py()
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")


class SampleLayout:
    """For one table's schema: which member each column becomes, which go to `.json` and the manifest."""

    def __init__(self, schema: pa.Schema, declared: dict[str, str]) -> None:
        self.files: dict[str, str] = {}  # column -> member suffix
        self.lists: dict[str, str] = {}  # list column -> member suffix, one member per item
        self.meta: list[str] = []  # columns in KEY.json (scalars also go to the manifest)
        self.manifest: list[str] = []
        for field in schema:
            name, type_ = field.name, field.type
            if name in _STEERING or name == columns.MEDIA:
                continue
            suffix = declared.get(name) or default_member(name)
            if is_scalar(type_):
                self.manifest.append(name)
                self.meta.append(name)
                if suffix is not None:
                    self.files[name] = suffix
            elif _is_binary_list(type_):
                self.lists[name] = suffix or f"{name}.bin"
            elif suffix is not None:
                self.files[name] = suffix
            elif _is_numeric_array(type_):
                self.files[name] = f"{name}.npy"
            elif _is_binary(type_):
                self.files[name] = f"{name}.bin"
            else:
                self.meta.append(name)

    def encode(self, table: pa.Table) -> list[dict[str, bytes]]:
        """Per row, the files of its sample other than its media and `.json`, by member suffix."""
        out: list[dict[str, bytes]] = [{} for _ in range(table.num_rows)]
        for name, suffix in self.files.items():
            array = table.column(name).combine_chunks()
            for i in range(table.num_rows):
                if array[i].is_valid:
                    out[i][suffix] = _encode(suffix, array, i)
        for name, suffix in self.lists.items():
            stem, _, ext = suffix.rpartition(".")
            for i, items in enumerate(table.column(name).to_pylist()):
                for n, item in enumerate(items or []):
                    out[i][f"{stem}.{n}.{ext}" if stem else f"{n}.{ext}"] = item
        return out
