"""Reading and writing local paths and s3:// URIs with one set of functions.

S3 goes through boto3, so `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`) points it
at any S3-protocol server.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def is_s3(uri: str) -> bool:
    """Whether `uri` names an object in S3."""
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """Bucket and key of an s3:// URI."""
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"S3 URI {uri!r} has no bucket; expected s3://BUCKET/KEY")
    return bucket, key


def local_path(uri: str) -> str:
    """The filesystem path of a local URI (plain path or file://)."""
    return uri[len("file://"):] if uri.startswith("file://") else uri


def join(base: str, *parts: str) -> str:
    """Join path parts onto a local path or an s3:// prefix."""
    if is_s3(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(local_path(base), *parts)


@functools.cache
def _client():  # noqa: ANN202 - boto3 client type is generated at run time
    import boto3

    return boto3.client("s3")


def read_bytes(uri: str) -> bytes:
    """The whole content of a file or object."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        return _client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return Path(local_path(uri)).read_bytes()


@contextlib.contextmanager
def open_local(uri: str) -> Iterator[str]:
    """A local filesystem path with the content of `uri`, for tools that need one (ffmpeg, PyAV).

    S3 objects are downloaded to a temporary file that is removed afterwards.
    """
    if not is_s3(uri):
        yield local_path(uri)
        return
    bucket, key = split_s3(uri)
    suffix = os.path.splitext(key)[1]
    fd, tmp = tempfile.mkstemp(prefix="dataprep-", suffix=suffix)
    os.close(fd)
    try:
        _client().download_file(bucket, key, tmp)
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def list_files(uri: str) -> list[str]:
    """Every file below a local directory or an s3:// prefix, sorted."""
    if is_s3(uri):
        bucket, prefix = split_s3(uri)
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        out: list[str] = []
        paginator = _client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            out.extend(f"s3://{bucket}/{obj['Key']}" for obj in page.get("Contents", []))
        return sorted(out)
    root = local_path(uri)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        found.extend(os.path.join(dirpath, name) for name in filenames)
    return sorted(found)


def iter_folders(uri: str) -> Iterator[list[str]]:
    """The files below a local directory or an s3:// prefix, one folder at a time (each sorted), as listed.

    S3 is listed with ListObjectsV2 and `/` as delimiter, page by page: a folder's files
    come out as soon as its pages are read, and no list of every file is ever held.
    """
    if not is_s3(uri):
        for dirpath, dirnames, filenames in os.walk(local_path(uri)):
            dirnames.sort()
            yield [os.path.join(dirpath, name) for name in sorted(filenames)]
        return
    bucket, prefix = split_s3(uri)
    pending = [prefix + "/" if prefix and not prefix.endswith("/") else prefix]
    paginator = _client().get_paginator("list_objects_v2")
    while pending:
        folder, files, subfolders = pending.pop(0), [], []
        for page in paginator.paginate(Bucket=bucket, Prefix=folder, Delimiter="/"):
            files.extend(f"s3://{bucket}/{obj['Key']}" for obj in page.get("Contents", []))
            subfolders.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
        yield sorted(files)
        pending[:0] = sorted(subfolders)


def read_parquet(uri: str) -> Any:
    """A Parquet file or object as a pyarrow table."""
    import io

    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(read_bytes(uri)))


def parquet_bytes(table: Any) -> bytes:
    """`table` encoded as Parquet."""
    import io

    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def exists(uri: str) -> bool:
    """Whether a file or object exists."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            _client().head_object(Bucket=bucket, Key=key)
        except Exception:  # botocore raises ClientError subclasses built at run time
            return False
        return True
    return os.path.exists(local_path(uri))


def write_atomic(uri: str, data: bytes) -> None:
    """Write `data` so that readers see the whole content or nothing (temp file + rename locally)."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        _client().put_object(Bucket=bucket, Key=key, Body=data)
        return
    path = local_path(uri)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def upload_atomic(local_file: str, uri: str) -> None:
    """Move a finished local file to `uri`: a rename locally, a (multipart) upload to S3."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        _client().upload_file(local_file, bucket, key)
        os.remove(local_file)
        return
    path = local_path(uri)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        os.replace(local_file, path)
    except OSError:
        shutil.move(local_file, path)


def remove(uri: str) -> None:
    """Delete a file or object if it exists."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        _client().delete_object(Bucket=bucket, Key=key)
        return
    with contextlib.suppress(FileNotFoundError):
        os.remove(local_path(uri))
