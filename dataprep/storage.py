"""Reading and writing local paths and s3:// URIs with one set of functions.

S3 goes through boto3, so `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`) points it
at any S3-protocol server. Every S3 request is retried (`MAX_ATTEMPTS`, botocore's
standard mode), and an object is only ever visible whole: each write is one PUT of
the whole object, or a multipart upload that becomes visible when it is completed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import shutil
import tempfile
import time
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


# Retries of S3 requests, by boto3 here and by pyarrow for Ray Data's Parquet segments: botocore's
# standard mode (and pyarrow's AwsStandardS3RetryStrategy, the AWS C++ SDK's) retries 500/502/503/504,
# throttling (503 SlowDown) and dropped connections with capped exponential backoff and jitter
# (botocore: up to 50 ms * 2^n after a 5xx or a dropped connection, 1 s * 2^n after throttling, at
# most 20 s). 10 attempts rather than the default 3: at a 10% fault rate 3 attempts leave one request
# in a thousand failed, and a job makes ~9 requests per row (the quickstart job on S3), so a job of a
# few hundred rows would fail; 10 leave one in 10^10. `AWS_MAX_ATTEMPTS` overrides the attempts of
# both, `AWS_RETRY_MODE` (e.g. adaptive) boto3's mode.
RETRY_MODE = "standard"
MAX_ATTEMPTS = 10
# Seconds to open a connection: an endpoint that does not answer in 10 s is tried again (botocore: 60).
CONNECT_TIMEOUT_S = 10
# Seconds a socket read may wait for bytes: botocore's default, longer than S3 takes to start any answer.
READ_TIMEOUT_S = 60


def max_attempts() -> int:
    """Attempts per S3 request (first try included): `AWS_MAX_ATTEMPTS` when set, else `MAX_ATTEMPTS`."""
    return int(os.environ.get("AWS_MAX_ATTEMPTS") or MAX_ATTEMPTS)


@functools.cache
def _client():  # noqa: ANN202 - boto3 client type is generated at run time
    import boto3
    from botocore.config import Config

    # total_max_attempts counts the first try, as AWS_MAX_ATTEMPTS and pyarrow do (max_attempts would not).
    retries = {"mode": os.environ.get("AWS_RETRY_MODE") or RETRY_MODE, "total_max_attempts": max_attempts()}
    return boto3.client("s3", config=Config(retries=retries, connect_timeout=CONNECT_TIMEOUT_S,
                                            read_timeout=READ_TIMEOUT_S))


def pyarrow_filesystem(uri: str) -> Any:
    """The pyarrow filesystem for readers and writers that take one (Ray Data's Parquet): for an s3:// URI
    an S3FileSystem with the retries of boto3 here, else None (the local filesystem)."""
    if not is_s3(uri):
        return None
    from pyarrow import fs

    # The endpoint boto3 uses; without one (AWS itself) the bucket's region is looked up, as
    # FileSystem.from_uri does.
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = None if endpoint else fs.resolve_s3_region(split_s3(uri)[0])
    return _s3_filesystem(endpoint, region, max_attempts())


def _s3_filesystem(endpoint: str | None, region: str | None, attempts: int) -> Any:
    """A pyarrow S3FileSystem retrying each request up to `attempts` times, on every worker it is sent to."""
    from pyarrow import fs

    class RetryingS3FileSystem(fs.S3FileSystem):
        def __reduce__(self) -> tuple[Any, tuple[str | None, str | None, int]]:
            # pyarrow's own pickling drops the retry strategy: Ray's workers would get its default 3 attempts.
            return _s3_filesystem, (endpoint, region, attempts)

    return RetryingS3FileSystem(endpoint_override=endpoint, region=region,
                                retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=attempts),
                                connect_timeout=CONNECT_TIMEOUT_S, request_timeout=READ_TIMEOUT_S)


def _transfer_config():  # noqa: ANN202 - boto3's TransferConfig, imported with boto3
    """Settings of boto3's managed transfers: a download cut off mid-body is started again as often as
    any other request is retried."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(num_download_attempts=max_attempts())


def _get_object(bucket: str, key: str) -> bytes:
    """An object's bytes. botocore retries a request until its answer's headers arrive; a body cut off
    after them is asked for again here, with the same backoff as a dropped connection."""
    from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError

    for attempt in range(max_attempts() - 1):
        try:
            return _client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except (IncompleteReadError, ReadTimeoutError, ResponseStreamingError):
            time.sleep(random.random() * min(0.05 * 2**attempt, 20))
    return _client().get_object(Bucket=bucket, Key=key)["Body"].read()


def read_bytes(uri: str) -> bytes:
    """The whole content of a file or object."""
    if is_s3(uri):
        return _get_object(*split_s3(uri))
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
        _client().download_file(bucket, key, tmp, Config=_transfer_config())
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


def list_versions(uri: str) -> dict[str, tuple[str, float]]:
    """Every file below a local directory or an s3:// prefix -> its version (see `version`), as one listing."""
    return {found: tag for found, _, tag in _listed(uri)}


def sizes(uri: str) -> dict[str, int]:
    """Every file below a local directory or an s3:// prefix -> its size in bytes, as one listing."""
    return {found: size for found, size, _ in _listed(uri)}


def _listed(uri: str) -> Iterator[tuple[str, int, tuple[str, float]]]:
    """(URI, size, version) of every file below a local directory or an s3:// prefix."""
    if is_s3(uri):
        bucket, prefix = split_s3(uri)
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        for page in _client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield (f"s3://{bucket}/{obj['Key']}", obj["Size"],
                       _s3_version(obj["ETag"], obj["Size"], obj["LastModified"]))
        return
    for dirpath, dirnames, filenames in os.walk(local_path(uri)):
        dirnames.sort()
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:  # removed while listed: it is not there
                continue
            yield path, st.st_size, _local_version(st)


def version(uri: str) -> tuple[str, float] | None:
    """A file's version: a tag that changes whenever its content may have (size, mtime and inode of a local
    file; size and ETag of an object) and its modification time in seconds. None for a folder or a prefix."""
    if is_s3(uri):
        from botocore.exceptions import ClientError

        bucket, key = split_s3(uri)
        try:
            head = _client().head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return _s3_version(head["ETag"], head["ContentLength"], head["LastModified"])
    path = local_path(uri)
    return _local_version(os.stat(path)) if os.path.isfile(path) else None


def _local_version(st: os.stat_result) -> tuple[str, float]:
    # An atomic write renames a new file into place: a new inode, even within one tick of the clock.
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}", st.st_mtime


def _s3_version(etag: str, size: int, modified: Any) -> tuple[str, float]:
    return f"{size}:{etag.strip(chr(34))}", modified.timestamp()


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


def read_columns(uri: str, names: list[str] | None) -> Any:
    """Some columns (all: None) of a small Parquet file or object, as a pyarrow table: a local file is read in
    this thread and only those columns are decoded (thousands of small commit records are read so)."""
    import pyarrow.parquet as pq

    if is_s3(uri):
        table = read_parquet(uri)
        return table if names is None else table.select(names)
    return pq.ParquetFile(local_path(uri)).read(columns=names, use_threads=False)


def parquet_bytes(table: Any) -> bytes:
    """`table` encoded as Parquet."""
    import io

    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def exists(uri: str) -> bool:
    """Whether a file or object exists. An S3 error other than "not found" is raised, not taken for a no:
    a lost answer must not read as a missing owner file or commit record."""
    if is_s3(uri):
        from botocore.exceptions import ClientError

        bucket, key = split_s3(uri)
        try:
            _client().head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True
    return os.path.exists(local_path(uri))


def write_atomic(uri: str, data: bytes) -> None:
    """Write `data` so that readers see the whole content or nothing (temp file + rename locally, one PUT
    of the whole object on S3: S3 makes nothing visible from a PUT that did not complete)."""
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
    """Move a finished local file to `uri`: a rename locally, an upload to S3 (one PUT, or above 8 MB a
    multipart upload, visible only once completed; a failed one is aborted by boto3)."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        _client().upload_file(local_file, bucket, key, Config=_transfer_config())
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
