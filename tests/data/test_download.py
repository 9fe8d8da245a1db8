"""Tests for downloads against a local HTTP server: checksums, mirrors, resume, extraction."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from walkingnoise.data import (
    DatasetFormatError,
    DatasetNotFoundError,
    DownloadError,
    RemoteFile,
    dataset_names,
    download_dataset,
    load_dataset,
    official_files,
)
from walkingnoise.data.download import OFFICIAL_FILES, extract_archive, fetch, verify_file

from .helpers import T10K_IMAGES, T10K_LABELS, encode_idx, write_cifar_dir
from .http_server import FileServer, RunningServer

PAYLOAD = bytes(range(256)) * 40  # 10 240 bytes


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def server() -> Iterator[FileServer]:
    with RunningServer(FileServer()) as state:
        yield state


@pytest.fixture
def closed_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: every request is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _remote(server: FileServer, name: str = "blob.bin", data: bytes = PAYLOAD, **kw) -> RemoteFile:
    server.files[f"/{name}"] = data
    return RemoteFile(name=name, urls=(server.url(f"/{name}"),), digests=(_sha256(data),), **kw)


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# --- plain downloads ---------------------------------------------------------------------------


def test_download_verifies_and_renames(server: FileServer, tmp_path: Path) -> None:
    remote = _remote(server, subdir="deep/dir")
    written = fetch("demo", tmp_path, [remote])
    target = tmp_path / "deep" / "dir" / "blob.bin"
    assert written == [target]
    assert target.read_bytes() == PAYLOAD
    assert not target.with_name("blob.bin.part").exists()
    # Present files are not fetched again.
    server.requests.clear()
    assert fetch("demo", tmp_path, [remote]) == []
    assert server.requests == []


def test_any_listed_digest_may_match(server: FileServer, tmp_path: Path) -> None:
    server.files["/blob.bin"] = PAYLOAD
    remote = RemoteFile(
        name="blob.bin",
        urls=(server.url("/blob.bin"),),
        digests=("sha256:" + "0" * 64, "md5:" + hashlib.md5(PAYLOAD).hexdigest()),
    )
    fetch("demo", tmp_path, [remote])
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD


def test_checksum_mismatch_keeps_nothing(server: FileServer, tmp_path: Path) -> None:
    remote = _remote(server)
    server.files["/blob.bin"] = PAYLOAD[::-1]  # the server now serves other bytes
    with pytest.raises(DownloadError) as err:
        fetch("demo", tmp_path, [remote])
    message = _one_line(err)
    assert message.startswith("dataset 'demo': could not download blob.bin (")
    assert "checksum mismatch: got sha256 " in message
    assert f"in {tmp_path}/" in message
    assert isinstance(err.value, DatasetNotFoundError)
    assert err.value.missing == ("blob.bin",)
    assert list(tmp_path.iterdir()) == []


def test_next_mirror_after_a_404(server: FileServer, tmp_path: Path) -> None:
    remote = _remote(server)
    mirrored = RemoteFile(
        name=remote.name, urls=(server.url("/gone/blob.bin"), *remote.urls), digests=remote.digests
    )
    fetch("demo", tmp_path, [mirrored])
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD
    assert [path for path, _ in server.requests] == ["/gone/blob.bin", "/blob.bin"]


# --- interruptions -----------------------------------------------------------------------------


def test_interrupted_transfer_is_resumed_with_a_range(server: FileServer, tmp_path: Path) -> None:
    remote = _remote(server)
    server.cuts["/blob.bin"] = (1, 3000)
    fetch("demo", tmp_path, [remote])
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD
    assert server.requests == [("/blob.bin", None), ("/blob.bin", "bytes=3000-")]


def test_server_without_ranges_restarts_cleanly(server: FileServer, tmp_path: Path) -> None:
    remote = _remote(server)
    server.ranges = False
    server.cuts["/blob.bin"] = (1, 3000)
    fetch("demo", tmp_path, [remote])
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD  # not the first 3000 bytes twice
    assert server.requests[1] == ("/blob.bin", "bytes=3000-")


def test_interruption_never_leaves_a_complete_looking_file(
    server: FileServer, tmp_path: Path
) -> None:
    remote = _remote(server)
    server.cuts["/blob.bin"] = (3, 1000)  # every attempt of this call is cut
    with pytest.raises(DownloadError) as err:
        fetch("demo", tmp_path, [remote], retries=2)
    assert (
        "connection closed after 3,000 of 10,240 bytes (3,000 kept in blob.bin.part"
        in _one_line(err)
    )
    assert not (tmp_path / "blob.bin").exists()
    part = tmp_path / "blob.bin.part"
    assert part.stat().st_size == 3000  # three cut attempts, each resumed
    # A later call resumes the .part instead of starting over.
    server.requests.clear()
    fetch("demo", tmp_path, [remote])
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD
    assert server.requests == [("/blob.bin", "bytes=3000-")]
    assert not part.exists()


def test_a_cut_chunked_transfer_is_resumed(server: FileServer, tmp_path: Path) -> None:
    """A body without Content-Length (chunked) that ends early is an interruption, as one with
    it: resumed from what arrived, not fetched whole and called a checksum mismatch."""
    remote = _remote(server)
    server.chunked = True
    server.cuts["/blob.bin"] = (1, 3000)  # inside the third chunk of 1,024 bytes
    fetch("demo", tmp_path, [remote])
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD
    assert server.requests == [("/blob.bin", None), ("/blob.bin", "bytes=2048-")]


def test_every_chunked_attempt_cut_says_so(server: FileServer, tmp_path: Path) -> None:
    remote = _remote(server)
    server.chunked = True
    server.cuts["/blob.bin"] = (3, 3000)
    with pytest.raises(DownloadError) as err:
        fetch("demo", tmp_path, [remote], retries=2)
    message = _one_line(err)
    assert "checksum mismatch" not in message
    assert "connection closed after 2,048 bytes (2,048 kept in blob.bin.part" in message
    assert not (tmp_path / "blob.bin").exists()


def test_a_full_disk_while_downloading_is_not_a_network_failure(
    server: FileServer, tmp_path: Path
) -> None:
    """The operating system refusing a write of the .part (here the file-size limit, as a
    full disk does) stops the download with that reason: no retry, no next mirror, no advice
    to fetch the file by hand; what landed stays for a resume."""
    resource = pytest.importorskip("resource")
    remote = _remote(server, data=PAYLOAD * 20)  # 204,800 bytes
    code = (
        "import sys\n"
        "from walkingnoise.data.download import RemoteFile, fetch\n"
        "urls = (sys.argv[1], sys.argv[1].replace('blob.bin', 'mirror/blob.bin'))\n"
        "remote = RemoteFile(name='blob.bin', urls=urls, digests=(sys.argv[2],))\n"
        "try:\n"
        "    fetch('demo', sys.argv[3], [remote])\n"
        "except OSError as error:\n"
        "    print(error)\n"
    )

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    result = subprocess.run(
        [sys.executable, "-c", code, remote.urls[0], remote.digests[0], str(tmp_path)],
        preexec_fn=limit_file_size,
        capture_output=True,
        text=True,
        check=True,
    )
    part = tmp_path / "blob.bin.part"
    assert result.stdout == (
        f"[Errno {errno.EFBIG}] {part}: cannot write: {os.strerror(errno.EFBIG)}\n"
    )
    assert server.requests == [("/blob.bin", None)]
    assert 0 < part.stat().st_size <= 100_000
    assert not (tmp_path / "blob.bin").exists()


def test_stale_part_is_discarded_and_fetched_again(server: FileServer, tmp_path: Path) -> None:
    remote = _remote(server)
    (tmp_path / "blob.bin.part").write_bytes(b"x" * len(PAYLOAD))  # complete but wrong
    fetch("demo", tmp_path, [remote])
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD
    assert server.requests == [("/blob.bin", f"bytes={len(PAYLOAD)}-"), ("/blob.bin", None)]


def test_a_damaged_file_at_the_target_is_fetched_again(server: FileServer, tmp_path: Path) -> None:
    """A file already in place that fails its checksum (truncated, or another file under its
    name) is not taken as present: it is downloaded again and verified."""
    remote = _remote(server)
    (tmp_path / "blob.bin").write_bytes(PAYLOAD[:100])
    assert remote.damaged(tmp_path)
    assert fetch("demo", tmp_path, [remote]) == [tmp_path / "blob.bin"]
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD
    assert not remote.damaged(tmp_path)


def test_corrupt_existing_archive_is_replaced(server: FileServer, tmp_path: Path) -> None:
    remote = _remote(server, "blob.tar.gz", _tar({"a.txt": b"A"}), extract_to="out")
    (tmp_path / "blob.tar.gz").write_bytes(b"half an archive")
    fetch("demo", tmp_path, [remote])
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"A"


# --- no network ------------------------------------------------------------------------------


def test_without_network_one_line_lists_every_file_and_place(
    closed_url: str, tmp_path: Path
) -> None:
    files = [
        RemoteFile(name=name, urls=(f"{closed_url}/d/{name}",), digests=(_sha256(b""),), subdir=sub)
        for name, sub in (("a.gz", "A/raw"), ("b.gz", "A/raw"), ("c.tar.gz", ""))
    ]
    with pytest.raises(DownloadError) as err:
        fetch("demo", tmp_path, files, timeout=5)
    message = _one_line(err)
    assert f"a.gz, b.gz from {closed_url}/d/ in {tmp_path / 'A' / 'raw'}/" in message
    assert f"c.tar.gz from {closed_url}/d/ in {tmp_path}/" in message
    assert re.search(r"could not download a\.gz \(http://127\.0\.0\.1:\d+/d/a\.gz: ", message)
    assert err.value.missing == ("a.gz", "b.gz", "c.tar.gz")
    assert not any(tmp_path.rglob("*.gz"))


def test_load_dataset_download_without_network(closed_url: str, tmp_path: Path) -> None:
    files = [f.with_mirror(closed_url) for f in official_files("svhn")]
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("svhn", tmp_path, download=files)
    message = _one_line(err)
    publisher = "http://ufldl.stanford.edu/housenumbers/"  # not the mirror that failed
    assert f"place train_32x32.mat, test_32x32.mat from {publisher} in {tmp_path}/" in message


# --- archives ----------------------------------------------------------------------------------


def _tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return stream.getvalue()


def test_archive_is_extracted_into_place(server: FileServer, tmp_path: Path) -> None:
    data = _tar({"top/x.txt": b"X", "top/sub/y.txt": b"Y", "other.txt": b"O"})
    remote = _remote(server, "pack.tar.gz", data, extract_to="Data/pack", archive_dir="top")
    written = fetch("demo", tmp_path, [remote])
    final = tmp_path / "Data" / "pack"
    assert written == [tmp_path / "pack.tar.gz", final]
    assert (final / "x.txt").read_bytes() == b"X"
    assert (final / "sub" / "y.txt").read_bytes() == b"Y"
    assert not (final / "other.txt").exists()
    assert sorted(p.name for p in (tmp_path / "Data").iterdir()) == ["pack"]  # no scratch left
    server.requests.clear()
    assert fetch("demo", tmp_path, [remote]) == []  # extracted content counts as present


def test_a_killed_extractions_scratch_folder_is_named(
    server: FileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A SIGKILL leaves no chance to clean up: the next extraction names what was left."""
    leftover = tmp_path / "Data" / ".pack.extract-abc123"
    leftover.mkdir(parents=True)
    (leftover / "half.bin").write_bytes(b"x" * 3_000_000)
    remote = _remote(server, "pack.tar.gz", _tar({"top/x.txt": b"X"}), extract_to="Data/pack",
                     archive_dir="top")  # fmt: skip
    with caplog.at_level("WARNING", logger="walkingnoise.data.download"):
        fetch("demo", tmp_path, [remote])
    assert f"{leftover}: left by an extraction that was killed" in caplog.text
    assert "delete it to free 3 MB" in caplog.text
    assert (tmp_path / "Data" / "pack" / "x.txt").read_bytes() == b"X"


def test_a_partly_extracted_folder_is_moved_aside_and_extracted_again(
    server: FileServer, tmp_path: Path
) -> None:
    """An interrupted ``tar x`` left the folder without all its files: not present."""
    data = _tar({"top/a.txt": b"A", "top/b.txt": b"B"})
    remote = _remote(
        server,
        "pack.tar.gz",
        data,
        extract_to="pack",
        archive_dir="top",
        contents=("a.txt", "b.txt"),
    )
    (tmp_path / "pack").mkdir()
    (tmp_path / "pack" / "a.txt").write_bytes(b"partial")
    assert not remote.satisfied(tmp_path)
    fetch("demo", tmp_path, [remote])
    assert (tmp_path / "pack" / "b.txt").read_bytes() == b"B"
    assert (tmp_path / "pack" / "a.txt").read_bytes() == b"A"
    assert (tmp_path / "pack.incomplete" / "a.txt").read_bytes() == b"partial"  # kept, not lost
    assert remote.satisfied(tmp_path)


def test_whole_archive_becomes_a_normally_readable_directory(
    server: FileServer, tmp_path: Path
) -> None:
    remote = _remote(server, "all.tar.gz", _tar({"w/a.wav": b"A"}), extract_to="X/data")
    fetch("demo", tmp_path, [remote])
    final = tmp_path / "X" / "data"
    assert (final / "w" / "a.wav").read_bytes() == b"A"
    umask = os.umask(0)
    os.umask(umask)
    assert final.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's private 0700
    assert sorted(p.name for p in (tmp_path / "X").iterdir()) == ["data"]


@pytest.mark.parametrize("use_filter", [True, False])
@pytest.mark.parametrize(
    ("members", "links"),
    [({"../evil.txt": b"E"}, None), ({"ok.txt": b"K"}, {"link": "../../outside"})],
)
def test_unsafe_archive_is_refused(
    tmp_path: Path, use_filter: bool, members: dict, links: dict | None
) -> None:
    if use_filter and not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile data filter")
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar(members, links))
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(DatasetFormatError, match=r"refusing") as err:
        extract_archive(archive, dest, filter_supported=use_filter)
    assert str(err.value).startswith(str(archive))
    assert not (tmp_path / "deep" / "evil.txt").exists()
    assert not (dest / "link").exists()


def test_corrupt_archive_is_named(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar({"x": b"1" * 5000})[:40])
    with pytest.raises(DatasetFormatError, match="corrupt archive"):
        extract_archive(archive, tmp_path / "out")


@pytest.mark.parametrize("use_filter", [True, False])
def test_a_full_disk_while_extracting_is_not_a_corrupt_archive(
    tmp_path: Path, use_filter: bool
) -> None:
    """The operating system refusing a write (here the file-size limit, as a full disk does)
    is said as such: "corrupt archive" would have the user fetch 2.4 GB again for nothing."""
    resource = pytest.importorskip("resource")
    if use_filter and not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile data filter")
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar({"big": os.urandom(200_000)}))
    dest = tmp_path / "out"
    code = (
        "import sys\n"
        "from walkingnoise.data.download import extract_archive\n"
        "try:\n"
        f"    extract_archive(sys.argv[1], sys.argv[2], filter_supported={use_filter})\n"
        "except Exception as error:\n"
        "    print(type(error).__name__, error)\n"
    )

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    result = subprocess.run(
        [sys.executable, "-c", code, str(archive), str(dest)],
        preexec_fn=limit_file_size,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "corrupt archive" not in result.stdout
    assert result.stdout == (
        f"OSError [Errno {errno.EFBIG}] {archive}: cannot extract into {dest}: "
        f"{os.strerror(errno.EFBIG)}\n"
    )


# --- datasets through load_dataset / download_dataset ----------------------------------------


def test_cifar10_download_then_load(server: FileServer, tmp_path: Path) -> None:
    folder = tmp_path / "src" / "cifar-10-batches-py"
    write_cifar_dir(folder)
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    official = official_files("cifar10")[0]
    server.files["/cifar-10-python.tar.gz"] = stream.getvalue()
    remote = RemoteFile(
        name=official.name,
        urls=(server.url("/cifar-10-python.tar.gz"),),
        digests=(_sha256(stream.getvalue()),),
        extract_to=official.extract_to,
        archive_dir=official.archive_dir,
    )
    root = tmp_path / "root"
    dataset = load_dataset("cifar10", root, download=[remote])
    assert len(dataset.test) == 12
    assert (root / "cifar-10-batches-py" / "data_batch_1").is_file()
    assert (root / "cifar-10-python.tar.gz").is_file()
    status = download_dataset("cifar10", root, files=[remote])
    assert status.present
    assert len(server.requests) == 1


def test_mnist_t10k_download_of_the_real_bytes(
    server: FileServer, mnist_t10k_dir: Path, tmp_path: Path
) -> None:
    files = []
    for stem in (T10K_IMAGES, T10K_LABELS):
        data = (mnist_t10k_dir / f"{stem}.gz").read_bytes()
        official = next(f for f in official_files("mnist-t10k") if f.name == f"{stem}.gz")
        server.files[f"/{stem}.gz"] = data
        files.append(
            RemoteFile(
                name=official.name,
                urls=(server.url(f"/{stem}.gz"),),
                digests=(_sha256(data),),
                subdir=official.subdir,
                present_if=official.present_if,
            )
        )
    dataset = load_dataset("mnist-t10k", tmp_path, download=files)
    assert len(dataset.test) == 2000
    assert (tmp_path / "MNIST" / "raw" / f"{T10K_IMAGES}.gz").is_file()


def test_fashion_download_is_not_satisfied_by_mnist_files_loose_in_the_root(
    server: FileServer, mnist_t10k_dir: Path, tmp_path: Path
) -> None:
    """MNIST's t10k files loose in the root share FashionMNIST's names: the download still
    fetches FashionMNIST's four files into its own folder, and those are what loads."""
    for stem in (T10K_IMAGES, T10K_LABELS):
        shutil.copy(mnist_t10k_dir / f"{stem}.gz", tmp_path / f"{stem}.gz")
    files = []
    for official in official_files("fashion_mnist"):
        images = "images" in official.name
        count = 12 if official.name.startswith("train") else 5
        array = np.full((count, 28, 28), 200, np.uint8) if images else np.full(count, 3, np.uint8)
        data = gzip.compress(encode_idx(array))
        server.files[f"/{official.name}"] = data
        files.append(replace(official, urls=(server.url(f"/{official.name}"),),
                             digests=(_sha256(data),)))  # fmt: skip
    status = download_dataset("fashion_mnist", tmp_path, files=files)
    assert {path.parent for path in status.files} == {tmp_path / "FashionMNIST" / "raw"}
    assert len(server.requests) == 4
    dataset = load_dataset("fashion_mnist", tmp_path, normalize=False)
    assert len(dataset.test) == 5
    assert dataset.test.y.unique().tolist() == [3]


def test_download_dataset_with_a_mirror_keeps_official_checksums(
    server: FileServer, tmp_path: Path
) -> None:
    server.files["/train_32x32.mat"] = b"not the real file"
    with pytest.raises(DownloadError, match="checksum mismatch") as err:
        download_dataset("svhn", tmp_path, mirror=server.base_url + "/")
    assert server.requests[0][0] == "/train_32x32.mat"
    assert "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8" in str(err.value)
    # fetching by hand: from the publisher, not from the mirror that just failed
    assert (
        "place train_32x32.mat, test_32x32.mat from http://ufldl.stanford.edu/housenumbers/ in"
        in str(err.value)
    )


def test_nothing_to_download_for_bundled_or_present_data(tmp_path: Path) -> None:
    assert official_files("digits") == ()
    assert download_dataset("digits", tmp_path).present
    with pytest.raises(KeyError, match="unknown dataset 'nope'; known: cifar10"):
        official_files("nope")


# --- the official table ----------------------------------------------------------------------


def test_every_file_based_dataset_has_official_files() -> None:
    assert set(OFFICIAL_FILES) == set(dataset_names()) - {"digits"}
    for name, files in OFFICIAL_FILES.items():
        assert files, name
        for remote in files:
            assert all(url.startswith(("https://", "http://")) for url in remote.urls)
            assert all(url.endswith("/" + remote.name) for url in remote.urls)
            assert any(d.startswith("sha256:") and len(d) == 71 for d in remote.digests), remote
            assert remote.size is not None
            assert remote.size > 1000


def test_official_mnist_uses_the_ossci_mirror_first() -> None:
    for remote in official_files("mnist"):
        assert remote.urls[0].startswith("https://ossci-datasets.s3.amazonaws.com/mnist/")
        assert remote.subdir == "MNIST/raw"
    assert official_files("speech_commands")[0].extract_to == "SpeechCommands/speech_commands_v0.02"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "a/b"}, "plain file name"),
        ({"urls": ()}, "at least one URL"),
        ({"digests": ()}, "at least one checksum"),
        ({"digests": ("sha256:XYZ",)}, "ALGO:lowercase-hex"),
        ({"digests": ("crc32:00ff",)}, "ALGO:lowercase-hex"),
    ],
)
def test_remote_file_validation(kwargs: dict, match: str) -> None:
    base = {"name": "f", "urls": ("http://x/f",), "digests": ("md5:" + "0" * 32,)}
    with pytest.raises(ValueError, match=match):
        RemoteFile(**{**base, **kwargs})


def test_verify_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert verify_file(path, [_sha256(b"abc")]) is None
    problem = verify_file(path, [_sha256(b"abd")])
    assert problem is not None
    assert problem.startswith("checksum mismatch: got sha256 ba7816bf")


def test_non_http_urls_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.write_bytes(b"abc")
    remote = RemoteFile(name="f", urls=(source.as_uri(),), digests=(_sha256(b"abc"),))
    with pytest.raises(DownloadError, match="only http"):
        fetch("demo", tmp_path / "root", [remote])
    shutil.rmtree(tmp_path / "root", ignore_errors=True)
