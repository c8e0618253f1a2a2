"""``file://`` store: objects are files under a root directory.

Visibility is atomic: every write goes to a temporary name in the target
directory, is fsynced, and becomes visible with one ``os.replace`` (or
``os.link`` for :meth:`create_if_absent`, which fails if the name exists).
The directory is fsynced too, so a visible object survives a power cut.
"""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import time
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

from spotsim.errors import InvalidKey, InvalidURI, ObjectNotFound, StoreError
from spotsim.storage.base import RESERVED_PREFIX, Store, empty_buffer

MAP_FROM_BYTES = 1 << 20  # smaller objects are read: a mapping costs more than it saves

_COPY_BLOCK = 8 << 20


class FileStore(Store):
    """A store rooted at an absolute local directory (created if missing)."""

    scheme = "file"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        root = Path(root)
        if not root.is_absolute():
            raise InvalidURI(f"file store root must be an absolute path, got {str(root)!r}")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create store directory {root}: {e.strerror}") from e
        if not root.is_dir():
            raise InvalidURI(f"file store root {root} exists and is not a directory")
        self.root = root.resolve()
        super().__init__(self.root.as_uri())

    @classmethod
    def from_uri(cls, uri: str, **options: object) -> FileStore:
        if options:
            raise TypeError(f"file:// stores take no options, got {', '.join(sorted(options))}")
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise InvalidURI(f"file store URI {uri!r} is not absolute: write file:///abs/dir (three slashes)")
        if not parts.path.startswith("/"):
            raise InvalidURI(f"file store URI {uri!r} has no absolute path: write file:///abs/dir")
        if parts.query or parts.fragment:
            raise InvalidURI(f"file store URI {uri!r} must not have a query or fragment")
        return cls(unquote(parts.path))

    # -- primitives ---------------------------------------------------------

    def _put_bytes(self, key: str, data: memoryview) -> None:
        target = self._path(key)
        tmp = self._write_temp(target.parent, lambda f: f.write(data))
        self._publish(tmp, target)

    def _put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        with _open_source(path) as src:
            tmp = self._write_temp(target.parent, lambda f: shutil.copyfileobj(src, f, _COPY_BLOCK))
        self._publish(tmp, target)

    def _get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
            raise ObjectNotFound(f"no object {key!r} in {self.uri}") from e

    def _get_buffer(self, key: str) -> memoryview:
        try:
            with open(self._path(key), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size >= MAP_FROM_BYTES:
                    # A private mapping: pages come straight from the page cache, no copy
                    # unless written to (then only that page, never the file). Objects
                    # are replaced by rename, never rewritten in place, so it stays valid.
                    return memoryview(mmap.mmap(f.fileno(), size, flags=mmap.MAP_PRIVATE))
                buffer = empty_buffer(size)
                if f.readinto(buffer) != len(buffer):
                    raise StoreError(f"object {key!r} in {self.uri} changed size while being read")
                return buffer
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
            raise ObjectNotFound(f"no object {key!r} in {self.uri}") from e

    def _get_file(self, key: str, path: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise ObjectNotFound(f"no object {key!r} in {self.uri}")
        tmp = path.with_name(f"{RESERVED_PREFIX}tmp-{uuid.uuid4().hex}-{path.name}")
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, path)
        except FileNotFoundError as e:
            tmp.unlink(missing_ok=True)
            raise ObjectNotFound(f"no object {key!r} in {self.uri}") from e
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _list(self, prefix: str) -> list[str]:
        # Walk only the deepest directory the prefix names, not the whole root.
        start = self.root.joinpath(*prefix.split("/")[:-1]) if "/" in prefix else self.root
        keys = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(RESERVED_PREFIX)]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith(RESERVED_PREFIX):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return keys

    def _exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _delete(self, key: str, missing_ok: bool) -> None:
        try:
            self._path(key).unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
            if not missing_ok:
                raise ObjectNotFound(f"no object {key!r} in {self.uri}") from e
        else:
            _fsync_dir(self._path(key).parent)
            self._prune_empty_dirs(self._path(key).parent)

    def _create_if_absent(self, key: str, data: memoryview) -> bool:
        target = self._path(key)
        tmp = self._write_temp(target.parent, lambda f: f.write(data))
        try:
            # link() refuses an existing name, atomically: the first linker wins
            # and its file is already complete and fsynced when it appears.
            os.link(tmp, target)
        except FileExistsError:
            return False
        except (IsADirectoryError, PermissionError) as e:
            if target.is_dir():
                raise InvalidKey(f"key {key!r} names a directory of other objects in {self.uri}") from e
            raise
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(target.parent)
        return True

    def clean_partial_writes(self, older_than_s: float = 3600.0) -> int:
        cutoff = time.time() - older_than_s
        removed = 0
        for dirpath, _, filenames in os.walk(self.root):
            for name in filenames:
                path = Path(dirpath, name)
                if name.startswith(f"{RESERVED_PREFIX}tmp-") and _mtime(path) < cutoff:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    # -- helpers ------------------------------------------------------------

    def _path(self, key: str) -> Path:
        """Map a validated key to its file, refusing anything outside the root."""
        path = self.root.joinpath(*key.split("/"))
        # Keys cannot contain '..', but a symlink planted inside the root could
        # still point outside it; resolve and check.
        if not path.resolve().is_relative_to(self.root):
            raise InvalidKey(f"key {key!r} resolves outside the store root {self.root}")
        return path

    def _prune_empty_dirs(self, directory: Path) -> None:
        """Remove directories a delete left empty, up to the root: keys are flat names, so
        an empty directory is no object at all."""
        while directory != self.root and directory.is_relative_to(self.root):
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or already gone): stop here
            directory = directory.parent

    def _write_temp(self, directory: Path, write) -> Path:
        """Write a complete, fsynced temporary file in ``directory`` and return its path."""
        tmp = directory / f"{RESERVED_PREFIX}tmp-{uuid.uuid4().hex}"
        for attempt in range(3):
            try:
                directory.mkdir(parents=True, exist_ok=True)
                f = open(tmp, "xb")  # noqa: SIM115 (closed by the try below, once the loop has a file)
                break
            except (FileExistsError, NotADirectoryError) as e:
                raise InvalidKey(f"a parent of {directory} in {self.uri} is an object, not a directory") from e
            except FileNotFoundError:
                if attempt == 2:  # a concurrent delete pruned the fresh directory each time
                    raise
        try:
            with f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _publish(self, tmp: Path, target: Path) -> None:
        try:
            os.replace(tmp, target)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if e.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise InvalidKey(f"{target} is a directory of other objects in {self.uri}") from e
            raise
        _fsync_dir(target.parent)


def _open_source(path: Path):
    try:
        return open(path, "rb")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"source file {path} does not exist") from e


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _fsync_dir(directory: Path) -> None:
    """Persist a directory entry change (rename, link, unlink) itself."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
