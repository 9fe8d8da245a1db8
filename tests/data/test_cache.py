"""Tests for the preprocessing cache: keys, hits, misses, invalidation, atomic writes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from walkingnoise.data.cache import (
    ArrayCache,
    MappedArrayCache,
    fingerprint_files,
    settings_key,
)


def _arrays() -> dict[str, np.ndarray]:
    return {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "y": np.array([1, 0])}


def test_settings_key_is_canonical() -> None:
    assert settings_key({"a": 1, "b": [2, 3]}) == settings_key({"b": [2, 3], "a": 1})
    assert settings_key({"a": 1}) != settings_key({"a": 2})
    assert len(settings_key({})) == 64


def test_stat_fingerprint_follows_size_and_mtime(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"1234")
    (tmp_path / "b.wav").write_bytes(b"xy")
    names = ["a.wav", "b.wav"]
    first = fingerprint_files(tmp_path, names)
    assert fingerprint_files(tmp_path, names) == first
    assert fingerprint_files(tmp_path, ["a.wav"]) != first  # file list is part of the key
    os.utime(tmp_path / "b.wav", ns=(0, 10**18))
    assert fingerprint_files(tmp_path, names) != first


def test_content_fingerprint_sees_same_size_same_mtime_edits(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    path.write_bytes(b"1234")
    info = path.stat()
    stat_before = fingerprint_files(tmp_path, ["a.wav"], "stat")
    content_before = fingerprint_files(tmp_path, ["a.wav"], "content")
    path.write_bytes(b"4321")
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert fingerprint_files(tmp_path, ["a.wav"], "stat") == stat_before
    assert fingerprint_files(tmp_path, ["a.wav"], "content") != content_before
    with pytest.raises(ValueError, match="'stat' or 'content'"):
        fingerprint_files(tmp_path, ["a.wav"], "mtime")  # type: ignore[arg-type]


def test_get_or_build_builds_once(tmp_path: Path) -> None:
    cache = ArrayCache(tmp_path / "cache", "demo")
    calls = []

    def build() -> dict[str, np.ndarray]:
        calls.append(1)
        return _arrays()

    miss = cache.get_or_build("s" * 64, "f" * 64, build)
    hit = cache.get_or_build("s" * 64, "f" * 64, build)
    assert (miss.hit, hit.hit) == (False, True)
    assert len(calls) == 1
    assert miss.path == hit.path == tmp_path / "cache" / f"demo-{'s' * 16}-{'f' * 16}.npz"
    for key, value in _arrays().items():
        np.testing.assert_array_equal(hit.arrays[key], value)
    assert set(hit.arrays) == {"x", "y"}
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [miss.path.name]  # no temp left


def test_new_files_key_replaces_entry_other_settings_keep_theirs(tmp_path: Path) -> None:
    cache = ArrayCache(tmp_path, "demo")
    old = cache.store("a" * 64, "1" * 64, _arrays())
    other_settings = cache.store("b" * 64, "1" * 64, _arrays())
    new = cache.store("a" * 64, "2" * 64, _arrays())
    assert old is not None
    assert other_settings is not None
    assert new is not None
    assert not old.exists()
    assert other_settings.exists()
    assert new.exists()
    assert cache.load("a" * 64, "1" * 64) is None


def test_corrupt_or_foreign_entry_is_rebuilt(tmp_path: Path) -> None:
    cache = ArrayCache(tmp_path, "demo")
    path = cache.path("a" * 64, "1" * 64)
    path.write_bytes(b"PK\x03\x04 truncated zip")
    result = cache.get_or_build("a" * 64, "1" * 64, _arrays)
    assert result.hit is False
    assert cache.load("a" * 64, "1" * 64) is not None
    # An entry whose stored key differs (same 16-character prefixes) is not trusted.
    cache.store("a" * 64, "1" * 64, _arrays())
    np.savez(path, x=np.zeros(1), __cache_key__=np.array("a" * 64 + "/" + "1" * 63 + "9"))
    assert cache.load("a" * 64, "1" * 64) is None


def test_interrupted_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = ArrayCache(tmp_path, "demo")

    def explode(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", explode)
    with pytest.raises(KeyboardInterrupt):
        cache.store("a" * 64, "1" * 64, _arrays())
    assert list(tmp_path.iterdir()) == []


def test_unwritable_cache_dir_still_returns_arrays(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = ArrayCache(blocker / "cache", "demo").get_or_build("a" * 64, "1" * 64, _arrays)
    assert result.hit is False
    assert result.path is None
    np.testing.assert_array_equal(result.arrays["y"], [1, 0])


# --- memory-mapped entries ---------------------------------------------------------------------


def test_mapped_cache_builds_once_and_maps_the_stored_arrays(tmp_path: Path) -> None:
    cache = MappedArrayCache(tmp_path / "cache", "big")
    calls = []

    def build() -> dict[str, np.ndarray]:
        calls.append(1)
        return _arrays()

    miss = cache.get_or_build("s" * 64, "f" * 64, build)
    hit = cache.get_or_build("s" * 64, "f" * 64, build)
    assert (miss.hit, hit.hit, len(calls)) == (False, True, 1)
    assert miss.path == hit.path == tmp_path / "cache" / f"big-{'s' * 16}-{'f' * 16}"
    for result in (miss, hit):
        assert set(result.arrays) == {"x", "y"}
        for key, value in _arrays().items():
            assert isinstance(result.arrays[key], np.memmap), key
            np.testing.assert_array_equal(result.arrays[key], value)
        assert not result.arrays["x"].flags.writeable
    names = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert names == sorted([miss.path.name, f".{miss.path.name}.lock"])  # no staging left


def test_mapped_cache_is_built_by_one_of_two_concurrent_callers(tmp_path: Path) -> None:
    cache = MappedArrayCache(tmp_path, "big")
    builds = []
    started = threading.Event()

    def build() -> dict[str, np.ndarray]:
        builds.append(threading.get_ident())
        started.set()
        time.sleep(0.3)  # the other caller asks meanwhile
        return _arrays()

    results = []

    def call() -> None:
        results.append(cache.get_or_build("s" * 64, "f" * 64, build))

    first = threading.Thread(target=call)
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=call)
    second.start()
    first.join()
    second.join()
    assert len(builds) == 1
    assert sorted(r.hit for r in results) == [False, True]
    for result in results:
        assert isinstance(result.arrays["x"], np.memmap)
        np.testing.assert_array_equal(result.arrays["x"], _arrays()["x"])


def test_mapped_cache_removes_the_staging_of_a_killed_build(tmp_path: Path) -> None:
    cache = MappedArrayCache(tmp_path, "big")
    entry = cache.path("s" * 64, "f" * 64)
    leftover = tmp_path / f".{entry.name}.k1ll3d"
    leftover.mkdir()
    (leftover / "samples.npy").write_bytes(b"half written")
    cache.get_or_build("s" * 64, "f" * 64, _arrays)
    assert not leftover.exists()
    assert entry.is_dir()


def test_mapped_cache_replaces_entries_of_other_files_and_ignores_incomplete_ones(
    tmp_path: Path,
) -> None:
    cache = MappedArrayCache(tmp_path, "big")
    old = cache.store("a" * 64, "1" * 64, _arrays())
    other_settings = cache.store("b" * 64, "1" * 64, _arrays())
    new = cache.store("a" * 64, "2" * 64, _arrays())
    assert old is not None
    assert other_settings is not None
    assert new is not None
    assert not old.exists()
    assert other_settings.exists()
    assert new.exists()
    # A folder without its key file was never completed: it is rebuilt, not read.
    (new / "__cache_key__.txt").unlink()
    assert cache.load("a" * 64, "2" * 64) is None
    rebuilt = cache.get_or_build("a" * 64, "2" * 64, _arrays)
    assert rebuilt.hit is False
    assert cache.load("a" * 64, "2" * 64) is not None
    # A key file of other settings (same 16-character prefixes) is not trusted.
    (new / "__cache_key__.txt").write_text("a" * 64 + "/" + "2" * 63 + "9")
    assert cache.load("a" * 64, "2" * 64) is None


def test_mapped_cache_keeps_an_entry_another_process_stored_meanwhile(tmp_path: Path) -> None:
    cache = MappedArrayCache(tmp_path, "big")
    first = cache.store("a" * 64, "1" * 64, _arrays())
    assert first is not None
    before = (first / "x.npy").stat().st_mtime_ns
    second = cache.store("a" * 64, "1" * 64, {"x": np.zeros(3), "y": np.zeros(1)})
    assert second == first
    assert (first / "x.npy").stat().st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]


def test_mapped_cache_interrupted_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = MappedArrayCache(tmp_path, "big")

    def explode(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", explode)
    with pytest.raises(KeyboardInterrupt):
        cache.store("a" * 64, "1" * 64, _arrays())
    assert list(tmp_path.iterdir()) == []
