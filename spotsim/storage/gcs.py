"""``gs://`` store through google-cloud-storage, real GCS or an emulator.

Large objects move as parallel parts: uploads send parts concurrently and
``compose`` them into one object (one key, as the user sees it); downloads
read byte ranges concurrently, all pinned to one object generation, straight
into the destination buffer or memory-mapped file. Every transfer is checked
end to end against the crc32c the store records.

The SDK handles buckets, metadata, listing, compose and delete. The data path
uses the JSON API's media upload and ranged ``alt=media`` reads over the same
credentials, because the SDK's chunked Python I/O tops out far below what the
link carries (measured here: ~30 MiB/s SDK upload vs ~200 MiB/s raw media POST).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import mmap
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import google.auth
import requests
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials
from google.auth.transport.requests import AuthorizedSession
from google.cloud import storage
from requests.adapters import HTTPAdapter

from spotsim.errors import (
    BucketNotFound,
    IntegrityError,
    InvalidURI,
    ObjectNotFound,
    SpotsimError,
    StoreAccessDenied,
    StoreError,
    StoreUnavailable,
)
from spotsim.storage import crc
from spotsim.storage.base import RESERVED_PREFIX, Store, empty_buffer
from spotsim.storage.retry import OPEN_TIMEOUT_S, TRANSFER_TIMEOUT_S, transfer_retry

log = logging.getLogger(__name__)

MiB = 1 << 20
GCS_ENDPOINT = "https://storage.googleapis.com"
EMULATOR_PROJECT = "spotsim-emulator"
MAX_COMPOSE_SOURCES = 32  # GCS's limit for one compose request
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,220}[a-z0-9]$")
_PARTS_DIR = f"{RESERVED_PREFIX}parts"
_TIMEOUT = (10.0, 120.0)  # (connect, read) seconds per HTTP request
_CHUNK = 4 * MiB  # downloads stream through one buffer of this size per worker thread


@dataclass(frozen=True)
class TransferOptions:
    """How large objects are split.

    Attributes:
        workers: concurrent part transfers.
        part_size: bytes per part; objects larger than this go in parallel parts.
            Uploads grow the part so an object needs at most 32 parts (one compose).
        composite_upload: upload large objects as parallel parts joined by
            ``compose``. None (the default) means on for real GCS and off for an
            emulator: fake-gcs-server's filesystem backend writes every object
            under one global lock, so parallel parts cannot overlap there and
            compose copies every byte a second time; one stream is faster.
            Downloads use parallel ranges everywhere.
    """

    workers: int = 8
    part_size: int = 32 * MiB
    composite_upload: bool | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= 64:
            raise ValueError(f"workers must be between 1 and 64, got {self.workers}")
        if self.part_size < 256 * 1024 or self.part_size % (256 * 1024):
            raise ValueError(f"part_size must be a positive multiple of 256 KiB, got {self.part_size}")


def parse_gs_uri(uri: str) -> tuple[str, str]:
    """Split ``gs://bucket/prefix`` into (bucket, prefix without slashes at the ends)."""
    parts = urlsplit(uri)
    bucket = parts.netloc
    if not bucket:
        raise InvalidURI(f"gs:// URI {uri!r} names no bucket: write gs://bucket[/prefix]")
    if not _BUCKET_NAME.match(bucket) or ".." in bucket or len(bucket.split(".")[0]) > 63:
        raise InvalidURI(
            f"invalid bucket name {bucket!r} in {uri!r}: bucket names are 3-63 lowercase "
            "letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    if parts.query or parts.fragment:
        raise InvalidURI(f"gs:// URI {uri!r} must not have a query or fragment")
    prefix = parts.path.strip("/")
    if prefix and any(seg in ("", ".", "..") for seg in prefix.split("/")):
        raise InvalidURI(f"gs:// URI {uri!r} has an empty, '.' or '..' path segment")
    return bucket, prefix


class _GenerationGone(Exception):
    """The object was replaced or deleted while its parts were being read."""


# What the SDK and its HTTP layer raise; _sdk_errors turns each into a spotsim error.
_SDK_ERRORS = (
    api_exceptions.GoogleAPIError,
    auth_exceptions.RefreshError,
    auth_exceptions.DefaultCredentialsError,
    requests.ConnectionError,
    requests.Timeout,
)


def _translated(method):
    """Run a store primitive, whose first argument is the key, inside :meth:`GCSStore._sdk_errors`."""

    @functools.wraps(method)
    def wrapper(self: GCSStore, key: str, *args, **kwargs):
        with self._sdk_errors(key=key):
            return method(self, key, *args, **kwargs)

    return wrapper


class GCSStore(Store):
    """A store under ``gs://bucket/prefix`` on real GCS or an emulator.

    Args:
        bucket, prefix: where objects live; keys are appended to the prefix.
        endpoint: an emulator URL; defaults to ``STORAGE_EMULATOR_HOST`` when
            set (anonymous credentials), else real GCS with the user's
            application-default credentials.
        create_bucket: create a missing bucket; defaults to True only on an emulator.
        options: part size and parallelism for large objects.

    Attributes:
        retries: transient failures (429, 5xx, broken or refused connections) this store has
            caught and retried, or given up on at the end of its retry budget. A caller that
            reads it before and after an operation learns how hard the operation was.
    """

    scheme = "gs"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        create_bucket: bool | None = None,
        options: TransferOptions | None = None,
    ) -> None:
        super().__init__(f"gs://{bucket}/{prefix}".rstrip("/"))
        endpoint = endpoint or os.environ.get("STORAGE_EMULATOR_HOST") or None
        self.emulated = endpoint is not None
        if endpoint and "://" not in endpoint:
            endpoint = f"http://{endpoint}"
        self.endpoint = (endpoint or GCS_ENDPOINT).rstrip("/")
        self.options = options or TransferOptions()
        self._prefix = f"{prefix}/" if prefix else ""
        credentials, project = self._credentials()
        self._client = storage.Client(
            project=project, credentials=credentials, client_options={"api_endpoint": self.endpoint}
        )
        self._bucket = self._client.bucket(bucket)
        self._session = AuthorizedSession(credentials)
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=self.options.workers + 4)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._pool = ThreadPoolExecutor(self.options.workers, thread_name_prefix="spotsim-gcs")
        self._local = threading.local()
        self.retries = 0
        self._retries_lock = threading.Lock()
        self._deadline: float | None = None
        self._transfer_retry = transfer_retry(on_error=self._count_retry)
        try:
            self._open_bucket(self.emulated if create_bucket is None else create_bucket)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_uri(cls, uri: str, **kwargs) -> GCSStore:
        bucket, prefix = parse_gs_uri(uri)
        return cls(bucket, prefix, **kwargs)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._session.close()
        self._client.close()

    @contextlib.contextmanager
    def deadline(self, seconds: float) -> Iterator[None]:
        """Stop retrying ``seconds`` from now, for every call on this store (from any thread) until exit.

        A try under way is never cut short; a failure after the deadline is raised at once
        (as :class:`StoreUnavailable` when transient). A checkpoint save uses this so an
        outage costs it a bounded time, not a minute of retries per request.
        """
        previous, self._deadline = self._deadline, time.monotonic() + seconds
        try:
            yield
        finally:
            self._deadline = previous

    def _retry(self) -> Retry:
        """The transfer retry policy, cut to the deadline if one is set."""
        if self._deadline is None:
            return self._transfer_retry
        return self._transfer_retry.with_timeout(max(0.0, min(TRANSFER_TIMEOUT_S, self._deadline - time.monotonic())))

    @contextlib.contextmanager
    def _sdk_errors(self, *, key: str | None = None, doing: str | None = None) -> Iterator[None]:
        """Raise the SDK and HTTP errors of the body as spotsim errors: the one place this store translates them.

        Args:
            key: the object the body works on: a 404 means it is missing. Without one a 404 is a StoreError.
            doing: what the body does, for the message of an error with no closer translation (default: the key).

        Raises:
            ObjectNotFound, StoreAccessDenied, StoreUnavailable or StoreError, from the SDK's error.
        """
        try:
            yield
        except _SDK_ERRORS as e:
            raise self._spotsim_error(e, key, doing or repr(key)) from e

    def _spotsim_error(self, error: Exception, key: str | None, doing: str) -> SpotsimError:
        if isinstance(error, api_exceptions.NotFound) and key is not None:
            return ObjectNotFound(f"no object {key!r} in {self.uri}")
        if isinstance(error, auth_exceptions.DefaultCredentialsError):
            return StoreAccessDenied(
                f"no Google Cloud credentials for {self.uri}: run `gcloud auth application-default login`, "
                "or set STORAGE_EMULATOR_HOST to use an emulator"
            )
        if isinstance(error, (api_exceptions.Forbidden, api_exceptions.Unauthorized, auth_exceptions.RefreshError)):
            return StoreAccessDenied(f"{self.uri}: access denied: {error}")
        if isinstance(error, api_exceptions.RetryError):
            return StoreUnavailable(f"cannot reach {self.endpoint} for {self.uri}: {error.cause}")
        if isinstance(error, (requests.ConnectionError, requests.Timeout)):
            return StoreUnavailable(f"cannot reach {self.endpoint} for {self.uri}: {error}")
        if isinstance(error, api_exceptions.GoogleAPICallError):
            return StoreError(f"{self.uri}: {doing}: {error.code} {_one_line(error.message)}")
        return StoreError(f"{self.uri}: {doing}: {_one_line(str(error))}")

    def _count_retry(self, error: Exception) -> None:
        with self._retries_lock:
            self.retries += 1
        log.debug("%s: transient failure, retrying: %s", self.uri, _one_line(str(error)))

    # -- primitives ---------------------------------------------------------

    @_translated
    def _put_bytes(self, key: str, data: memoryview) -> None:
        self._upload(self._name(key), data)

    @_translated
    def _put_file(self, key: str, path: Path) -> None:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return self._upload(self._name(key), memoryview(b""))
            # A read-only map lets every part go out straight from the page cache.
            with mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) as mapped:
                view = memoryview(mapped)
                try:
                    self._upload(self._name(key), view)
                finally:
                    view.release()

    @_translated
    def _get_bytes(self, key: str) -> bytes:
        return self._download(self._name(key), _BufferSink)

    @_translated
    def _get_buffer(self, key: str) -> memoryview:
        return self._download(self._name(key), lambda size: _BufferSink(size, as_bytes=False))

    @_translated
    def _get_file(self, key: str, path: Path) -> None:
        tmp = path.with_name(f"{RESERVED_PREFIX}tmp-{uuid.uuid4().hex}-{path.name}")
        try:
            self._download(self._name(key), lambda size: _FileSink(tmp, size))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @_translated
    def _list(self, prefix: str) -> list[str]:
        start = len(self._prefix)
        blobs = self._client.list_blobs(self._bucket, prefix=self._prefix + prefix, retry=self._retry())
        return [b.name[start:] for b in blobs if not b.name[start:].startswith(RESERVED_PREFIX)]

    @_translated
    def _exists(self, key: str) -> bool:
        return self._bucket.blob(self._name(key)).exists(retry=self._retry())

    @_translated
    def _delete(self, key: str, missing_ok: bool) -> None:
        try:
            self._bucket.blob(self._name(key)).delete(retry=self._retry())
        except api_exceptions.NotFound:
            if not missing_ok:
                raise

    @_translated
    def _create_if_absent(self, key: str, data: memoryview) -> bool:
        name = self._name(key)
        tries = 0

        def attempt() -> None:
            nonlocal tries
            tries += 1
            self._conditional_upload(name, data)

        try:
            self._retry()(attempt)()
            return True
        except api_exceptions.PreconditionFailed:
            if tries == 1:
                return False
            # An earlier try may have landed before its response was lost:
            # the object is ours if it holds exactly our bytes.
            blob = self._bucket.get_blob(name, retry=self._retry())
            return blob is not None and blob.size == len(data) and blob.crc32c == _crc32c_b64(data)

    # -- maintenance --------------------------------------------------------

    def clean_partial_writes(self, older_than_s: float = 3600.0) -> int:
        cutoff = time.time() - older_than_s
        with self._sdk_errors(doing="cannot clean partial writes"):
            blobs = self._client.list_blobs(self._bucket, prefix=self._prefix + _PARTS_DIR + "/", retry=self._retry())
            stale = [b.name for b in blobs if b.time_created is None or b.time_created.timestamp() <= cutoff]
            self._delete_names(stale)
        return len(stale)

    # -- transfers ----------------------------------------------------------

    def _name(self, key: str) -> str:
        return self._prefix + key

    @property
    def _composite_uploads(self) -> bool:
        choice = self.options.composite_upload
        return not self.emulated if choice is None else choice

    def _upload(self, name: str, data: memoryview) -> None:
        size = len(data)
        part = max(self.options.part_size, _ceil_to(-(-size // MAX_COMPOSE_SOURCES), 256 * 1024))
        if size <= part or not self._composite_uploads:
            self._retry()(self._media_upload)(name, data)
            return
        ranges = [(lo, min(lo + part, size)) for lo in range(0, size, part)]
        parts_dir = f"{self._prefix}{_PARTS_DIR}/{uuid.uuid4().hex}"
        part_names = [f"{parts_dir}/{i:05d}" for i in range(len(ranges))]
        send = self._retry()(self._media_upload)

        def send_part(i: int) -> None:
            with data[ranges[i][0] : ranges[i][1]] as piece:
                send(part_names[i], piece)

        try:
            self._run_parallel(send_part, range(len(ranges)))
            target = self._bucket.blob(name)
            target.content_type = "application/octet-stream"
            # compose is atomic: readers see the old object or the whole new one.
            target.compose([self._bucket.blob(n) for n in part_names], retry=self._retry())
            if target.crc32c != _crc32c_b64(data):
                raise IntegrityError(f"composed object {name!r} does not match the bytes sent")
        finally:
            self._delete_names(part_names)

    def _media_upload(self, name: str, data: memoryview, *, if_generation_match: int | None = None) -> None:
        params = {"uploadType": "media", "name": name}
        if if_generation_match is not None:
            params["ifGenerationMatch"] = str(if_generation_match)
        resp = self._session.post(
            f"{self.endpoint}/upload/storage/v1/b/{self._bucket.name}/o",
            params=params,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=_TIMEOUT,
        )
        _raise_for_status(resp)
        _check_stored_crc(resp, name, data)

    def _conditional_upload(self, name: str, data: memoryview) -> None:
        """Create ``name`` only if absent, in one multipart request with ``ifGenerationMatch=0``.

        Multipart rather than media upload because fake-gcs-server enforces
        generation preconditions only on multipart uploads; real GCS on all.
        Meant for small commit objects: the body is assembled in memory.
        """
        boundary = f"spotsim-{uuid.uuid4().hex}"
        metadata = json.dumps({"name": name, "contentType": "application/octet-stream", "crc32c": _crc32c_b64(data)})
        parts: list[bytes | memoryview] = [
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n".encode(),
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode(),
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
        body = b"".join(parts)
        resp = self._session.post(
            f"{self.endpoint}/upload/storage/v1/b/{self._bucket.name}/o",
            params={"uploadType": "multipart", "ifGenerationMatch": "0"},
            data=body,
            headers={"Content-Type": f"multipart/related; boundary={boundary}"},
            timeout=_TIMEOUT,
        )
        _raise_for_status(resp)
        _check_stored_crc(resp, name, data)

    def _download(self, name: str, open_sink):
        """Read object ``name`` into a sink made by ``open_sink(size)``; return the sink's result."""
        for _ in range(3):
            blob = self._bucket.get_blob(name, retry=self._retry())
            if blob is None:
                raise api_exceptions.NotFound(f"no object {name}")
            with open_sink(blob.size) as sink:
                try:
                    checksum = self._read_parts(name, blob.generation, blob.size, sink.write)
                except _GenerationGone:
                    continue  # replaced while reading: start over on the new generation
                if blob.crc32c is not None and crc.to_b64(checksum) != blob.crc32c:
                    raise IntegrityError(f"bytes read for {name!r} do not match its stored crc32c")
                return sink.result()
        raise StoreError(f"object {name!r} kept changing while being read")

    def _read_parts(self, name: str, generation: int, size: int, write) -> int:
        """Read the object in parallel byte ranges through ``write(offset, chunk)``; return its crc32c."""
        part = self.options.part_size
        ranges = [(lo, min(lo + part, size)) for lo in range(0, size, part)]
        read = self._retry()(self._read_range)
        if len(ranges) <= 1:
            return read(name, generation, 0, size, write, ranged=False) if size else 0
        checksums = self._run_parallel(lambda r: read(name, generation, r[0], r[1], write, ranged=True), ranges)
        total = checksums[0]
        for (lo, hi), part_crc in zip(ranges[1:], checksums[1:], strict=True):
            total = crc.combine(total, part_crc, hi - lo)
        return total

    def _read_range(self, name: str, generation: int, lo: int, hi: int, write, *, ranged: bool) -> int:
        """Stream bytes [lo, hi) of one generation to ``write``; return their crc32c."""
        headers = {"Accept-Encoding": "identity"}
        if ranged:
            headers["Range"] = f"bytes={lo}-{hi - 1}"
        url = f"{self.endpoint}/download/storage/v1/b/{self._bucket.name}/o/{quote(name, safe='')}"
        params = {"alt": "media", "generation": str(generation)}
        buffer = self._chunk_buffer()
        checksum, offset = 0, lo
        with self._session.get(url, params=params, headers=headers, stream=True, timeout=_TIMEOUT) as resp:
            if resp.status_code == 404:
                raise _GenerationGone(name)
            _raise_for_status(resp)
            while offset < hi:
                n = min(_CHUNK, hi - offset)
                with buffer[:n] as chunk:
                    _fill(resp.raw, chunk, name)
                    write(offset, chunk)
                    checksum = crc.crc32c_of(chunk, checksum)
                offset += n
        return checksum

    def _chunk_buffer(self) -> memoryview:
        """This thread's reusable download buffer (allocated once, so pages fault in once)."""
        buffer = getattr(self._local, "buffer", None)
        if buffer is None:
            buffer = self._local.buffer = memoryview(bytearray(_CHUNK))
        return buffer

    def _delete_names(self, names: list[str]) -> None:
        def delete(name: str) -> None:
            with contextlib.suppress(api_exceptions.NotFound):
                self._bucket.blob(name).delete(retry=self._retry())

        self._run_parallel(delete, names)

    def _run_parallel(self, fn, items) -> list:
        """Run ``fn`` over ``items`` on the pool; wait for every call, then return the results in order.

        The first failure is re-raised, but only once every call has ended.

        Waiting for all matters: the calls write into shared buffers and maps
        that the caller releases as soon as this returns.
        """
        futures = [self._pool.submit(fn, item) for item in items]
        wait(futures)
        return [future.result() for future in futures]

    def _open_bucket(self, create: bool) -> None:
        """Load (or create) the bucket; this first request is also where a wrong endpoint shows.

        Raises:
            BucketNotFound, StoreAccessDenied, StoreUnavailable, or StoreError (also
            when the endpoint is some other HTTP server, e.g. a mistyped STORAGE_EMULATOR_HOST).
        """
        with self._sdk_errors(doing="cannot open the bucket"):
            try:
                self._load_bucket(create)
            except api_exceptions.GoogleAPICallError as e:
                if not _speaks_json(e):
                    kind = e.response.headers.get("Content-Type") or "no content type"
                    raise self._not_gcs(f"HTTP {e.code}, {kind}") from e
                raise
            except ValueError as e:  # a success whose body is not JSON
                raise self._not_gcs("a success that is not JSON") from e

    def _load_bucket(self, create: bool) -> None:
        retry = self._transfer_retry.with_timeout(OPEN_TIMEOUT_S)
        try:
            self._bucket.reload(retry=retry, timeout=5)
        except api_exceptions.NotFound as e:
            if not _speaks_json(e):
                raise  # any web server says 404: only a JSON one is GCS saying "no bucket"
            if not create:
                raise BucketNotFound(f"bucket gs://{self._bucket.name} does not exist at {self.endpoint}") from e
            with contextlib.suppress(api_exceptions.Conflict):  # created by a concurrent opener
                self._client.create_bucket(self._bucket.name, retry=retry)

    def _not_gcs(self, answer: str) -> StoreError:
        hint = ": point STORAGE_EMULATOR_HOST (or endpoint=) at a GCS emulator" if self.emulated else ""
        return StoreError(f"{self.endpoint} does not answer like a GCS JSON API ({answer}) for {self.uri}{hint}")

    def _credentials(self):
        if self.emulated:
            return AnonymousCredentials(), EMULATOR_PROJECT
        with self._sdk_errors(doing="cannot find credentials"):
            return google.auth.default(scopes=["https://www.googleapis.com/auth/devstorage.read_write"])


class _BufferSink:
    """Download sink: an in-memory buffer, returned as bytes."""

    def __init__(self, size: int, *, as_bytes: bool = True) -> None:
        self._buffer = bytearray(size) if as_bytes else empty_buffer(size)
        self._as_bytes = as_bytes

    def __enter__(self) -> _BufferSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def write(self, offset: int, chunk: memoryview) -> None:
        self._buffer[offset : offset + len(chunk)] = chunk

    def result(self) -> bytes | bytearray | memoryview:
        return bytes(self._buffer) if self._as_bytes else self._buffer


class _FileSink:
    """Download sink: a new file written with positional writes from any thread."""

    def __init__(self, path: Path, size: int) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.ftruncate(self._fd, size)

    def __enter__(self) -> _FileSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.close(self._fd)

    def write(self, offset: int, chunk: memoryview) -> None:
        while chunk:
            written = os.pwrite(self._fd, chunk, offset)
            chunk, offset = chunk[written:], offset + written

    def result(self) -> None:
        # No fsync: a downloaded copy is a cache that appears by rename; it need
        # not survive a power cut, and fsyncing a gigabyte costs seconds.
        return None


def _fill(raw, chunk: memoryview, name: str) -> None:
    """Read exactly ``len(chunk)`` bytes of a response body into ``chunk``."""
    filled = 0
    while filled < len(chunk):
        got = raw.readinto(chunk[filled:])
        if not got:
            raise ConnectionError(f"connection closed early while reading {name!r}")
        filled += got


def _speaks_json(error: api_exceptions.GoogleAPICallError) -> bool:
    """Whether an HTTP error came with a JSON body, as every GCS JSON API error does (unknown: assume so)."""
    response = getattr(error, "response", None)
    return response is None or "json" in response.headers.get("Content-Type", "")


def _one_line(text: str, limit: int = 200) -> str:
    """An error body (maybe a whole HTML page) as one short line."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _raise_for_status(resp: requests.Response) -> None:
    if resp.status_code >= 400:
        raise api_exceptions.from_http_response(resp)


def _check_stored_crc(resp: requests.Response, name: str, data: memoryview) -> None:
    stored = resp.json().get("crc32c")
    if stored is not None and stored != _crc32c_b64(data):
        raise IntegrityError(f"store recorded crc32c {stored} for {name!r}, which differs from the bytes sent")


def _crc32c_b64(data: memoryview) -> str:
    return crc.to_b64(crc.crc32c_of(data))


def _ceil_to(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
