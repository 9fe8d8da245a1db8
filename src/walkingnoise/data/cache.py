"""A cache of preprocessed arrays keyed by the settings and the source files.

Small arrays live in one ``.npz`` per entry (:class:`ArrayCache`); arrays too large to hold once
per process live in a folder of ``.npy`` files read memory-mapped (:class:`MappedArrayCache`),
so that the workers of a sweep share one copy in the page cache.

The key has two parts: a hash of the settings (feature parameters, loader version, …) and a
fingerprint of the source files (relative path plus size and modification time, or plus a hash of
the content). Either changing gives another name, so a stale entry is never read; entries with
the same settings but other source files are removed when a new one is written. Entries are
written under a temporary name and renamed, so a crash never leaves a truncated entry behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "CACHE_DIR_NAME",
    "ArrayCache",
    "CacheResult",
    "Fingerprint",
    "MappedArrayCache",
    "fingerprint_files",
    "settings_key",
]

logger = logging.getLogger(__name__)

CACHE_DIR_NAME = ".walkingnoise-cache"
"""Name of the cache folder created next to a dataset's files."""

Fingerprint = Literal["stat", "content"]
_KEY_ENTRY = "__cache_key__"
_CHUNK = 1 << 20


def settings_key(settings: Mapping[str, Any]) -> str:
    """SHA-256 of the settings as canonical JSON (sorted keys; non-JSON values via ``str``)."""
    text = json.dumps(settings, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint_files(directory: Path, relpaths: Iterable[str], mode: Fingerprint = "stat") -> str:
    """SHA-256 over the files' relative paths and sizes plus mtimes (``stat``) or content hashes.

    ``stat`` costs one ``stat`` per file; ``content`` reads every byte (BLAKE2b) and also notices
    edits that keep size and modification time.
    """
    if mode not in ("stat", "content"):
        raise ValueError(f"fingerprint must be 'stat' or 'content', got {mode!r}")
    digest = hashlib.sha256(mode.encode())
    for rel in relpaths:
        path = directory / rel
        info = path.stat()
        if mode == "stat":
            entry = f"{rel}\0{info.st_size}\0{info.st_mtime_ns}\n"
        else:
            content = hashlib.blake2b()
            with path.open("rb") as stream:
                while chunk := stream.read(_CHUNK):
                    content.update(chunk)
            entry = f"{rel}\0{info.st_size}\0{content.hexdigest()}\n"
        digest.update(entry.encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheResult:
    """Arrays from :meth:`ArrayCache.get_or_build`, whether they came from the cache, and where."""

    arrays: dict[str, np.ndarray]
    hit: bool
    path: Path | None


class ArrayCache:
    """``.npz`` files named ``<name>-<settings key>-<files key>.npz`` in one directory."""

    def __init__(self, directory: str | Path, name: str) -> None:
        self.directory = Path(directory)
        self.name = name

    def path(self, settings: str, files: str) -> Path:
        """File of the entry for these keys."""
        return self.directory / f"{self.name}-{settings[:16]}-{files[:16]}.npz"

    def load(self, settings: str, files: str) -> dict[str, np.ndarray] | None:
        """The cached arrays for these keys, or None (absent, unreadable or another key)."""
        path = self.path(settings, files)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            logger.warning("ignoring unreadable cache file %s: %s", path, error)
            return None
        stored = arrays.pop(_KEY_ENTRY, None)
        if stored is None or str(stored) != f"{settings}/{files}":
            logger.warning("ignoring cache file %s: written for other settings or files", path)
            return None
        return arrays

    def store(self, settings: str, files: str, arrays: Mapping[str, np.ndarray]) -> Path | None:
        """Write the entry atomically and drop older ones of these settings; None if unwritable."""
        path = self.path(settings, files)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                dir=self.directory, prefix=f".{path.stem}.", suffix=".tmp", delete=False
            ) as stream:
                try:
                    np.savez(stream, **arrays, **{_KEY_ENTRY: np.array(f"{settings}/{files}")})
                    stream.flush()
                    os.fsync(stream.fileno())
                except BaseException:
                    stream.close()
                    Path(stream.name).unlink(missing_ok=True)
                    raise
            os.replace(stream.name, path)
        except OSError as error:
            logger.warning("cannot write cache file %s (%s); continuing without it", path, error)
            return None
        for old in self.directory.glob(f"{self.name}-{settings[:16]}-*.npz"):
            if old != path:
                old.unlink(missing_ok=True)
                logger.info("removed stale cache file %s", old)
        return path

    def get_or_build(
        self, settings: str, files: str, build: Callable[[], dict[str, np.ndarray]]
    ) -> CacheResult:
        """Cached arrays for these keys, else ``build()`` them and store the result."""
        arrays = self.load(settings, files)
        if arrays is not None:
            logger.info("cache hit: %s", self.path(settings, files))
            return CacheResult(arrays, hit=True, path=self.path(settings, files))
        logger.info("cache miss: building %s", self.path(settings, files))
        arrays = build()
        return CacheResult(arrays, hit=False, path=self.store(settings, files, arrays))


class MappedArrayCache(ArrayCache):
    """Folders ``<name>-<settings key>-<files key>/`` of ``.npy`` files, loaded memory-mapped
    (read-only): for arrays of gigabytes that every worker process reads from one copy."""

    def path(self, settings: str, files: str) -> Path:
        """Folder of the entry for these keys."""
        return self.directory / f"{self.name}-{settings[:16]}-{files[:16]}"

    def load(self, settings: str, files: str) -> dict[str, np.ndarray] | None:
        """The cached arrays, memory-mapped, or None (absent, unreadable or another key)."""
        path = self.path(settings, files)
        key_file = path / f"{_KEY_ENTRY}.txt"
        if not key_file.is_file():
            return None
        try:
            if key_file.read_text(encoding="utf-8") != f"{settings}/{files}":
                logger.warning("ignoring cache %s: written for other settings or files", path)
                return None
            return {
                array.stem: np.load(array, mmap_mode="r", allow_pickle=False)
                for array in sorted(path.glob("*.npy"))
            }
        except (OSError, ValueError, UnicodeDecodeError) as error:
            logger.warning("ignoring unreadable cache %s: %s", path, error)
            return None

    def store(self, settings: str, files: str, arrays: Mapping[str, np.ndarray]) -> Path | None:
        """Write the entry's folder atomically and drop older ones of these settings; None if
        unwritable. The key is written last, so a folder without it was never completed."""
        path = self.path(settings, files)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=self.directory, prefix=f".{path.name}."))
            try:
                for name, array in arrays.items():
                    with (staging / f"{name}.npy").open("wb") as stream:
                        np.save(stream, array, allow_pickle=False)
                        stream.flush()
                        os.fsync(stream.fileno())
                (staging / f"{_KEY_ENTRY}.txt").write_text(f"{settings}/{files}", encoding="utf-8")
                if path.exists() and self.load(settings, files) is None:
                    shutil.rmtree(path)  # a broken leftover
                try:
                    os.rename(staging, path)
                except OSError:
                    if self.load(settings, files) is None:
                        raise
                    shutil.rmtree(staging)  # another process stored it meanwhile
                    return path
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        except OSError as error:
            logger.warning("cannot write cache %s (%s); continuing without it", path, error)
            return None
        for old in self.directory.glob(f"{self.name}-{settings[:16]}-*"):
            if old != path and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
                logger.info("removed stale cache %s", old)
        return path

    def get_or_build(
        self, settings: str, files: str, build: Callable[[], dict[str, np.ndarray]]
    ) -> CacheResult:
        """As :meth:`ArrayCache.get_or_build`, but one process builds an entry while the others
        that want it wait (an advisory lock next to it) and then map it; the builder maps the
        stored entry back too, so that no process keeps a copy of its own."""
        path = self.path(settings, files)
        arrays = self.load(settings, files)
        if arrays is None:
            with self._building(path):
                arrays = self.load(settings, files)  # another process may have built it
                if arrays is None:
                    return self._build(settings, files, build)
        logger.info("cache hit: %s", path)
        return CacheResult(arrays, hit=True, path=path)

    def _build(
        self, settings: str, files: str, build: Callable[[], dict[str, np.ndarray]]
    ) -> CacheResult:
        """Build and store the entry (holding its lock), then map what was stored."""
        path = self.path(settings, files)
        for leftover in self.directory.glob(f".{path.name}.*"):
            if leftover.is_dir():  # staging of a build that was killed
                shutil.rmtree(leftover, ignore_errors=True)
        logger.info("cache miss: building %s", path)
        built = build()
        stored = self.store(settings, files, built)
        mapped = None if stored is None else self.load(settings, files)
        return CacheResult(built if mapped is None else mapped, hit=False, path=stored)

    @contextmanager
    def _building(self, path: Path) -> Iterator[None]:
        """Hold the entry's build lock (``.<entry>.lock``); without a writable directory or
        ``fcntl`` (Windows) there is none to hold."""
        try:
            import fcntl
        except ImportError:
            yield
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            stream = (self.directory / f".{path.name}.lock").open("a")
        except OSError:
            yield
            return
        with stream:
            try:
                fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info("waiting for another process to build %s", path)
                fcntl.flock(stream.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(stream.fileno(), fcntl.LOCK_UN)
