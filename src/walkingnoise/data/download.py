"""Fetching the published dataset files: mirrors, checksums, atomic writes, resume, safe extraction.

Every file is streamed to ``NAME.part`` next to its destination, verified against the published
checksum, and only then renamed to ``NAME`` (``os.replace``), so an interrupted download never
leaves a file that looks complete. A ``.part`` left by an interruption is resumed with an HTTP
``Range`` request where the server supports it, and downloaded again from the start where it does
not. Archives are extracted into a temporary directory beside the destination and renamed into
place, refusing members that would land outside it.

Checksums are the publishers' or those published by torchvision, torchaudio, Keras and TensorFlow
Datasets for the same URLs (see :data:`OFFICIAL_FILES`). Mirrors of one file may differ in
compression headers, so a file passes if it matches any digest listed for it.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import IO

from tqdm.auto import tqdm

from walkingnoise import __version__
from walkingnoise._progress import bar_disabled
from walkingnoise.data.errors import DatasetFormatError, DatasetNotFoundError, one_line
from walkingnoise.data.registry import (
    UnknownDatasetError,
    data_root,
    dataset_names,
    dataset_status,
)
from walkingnoise.data.status import DatasetStatus, disk_usage

__all__ = [
    "OFFICIAL_FILES",
    "DownloadError",
    "RemoteFile",
    "download_dataset",
    "extract_archive",
    "fetch",
    "locate_or_download",
    "official_files",
    "verify_file",
]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 16  # small enough for a smooth bar and for little lost when a read times out
_USER_AGENT = f"walkingnoise/{__version__} (+dataset download; Python urllib)"
_DIGEST = re.compile(r"^(md5|sha1|sha256|sha512):([0-9a-f]+)$")


@dataclass(frozen=True)
class RemoteFile:
    """One published file: where it goes under the data root, where to get it, how to check it.

    Attributes:
        name: file name on disk (and the last part of every URL).
        urls: full URLs tried in order (the publisher first, then mirrors).
        digests: ``"sha256:<hex>"`` / ``"md5:<hex>"``; the file is accepted if any one matches.
        size: published size in bytes, or None (used for progress and listings only).
        subdir: directory under the root the file is written to (``/``-separated, "" = root).
        extract_to: for archives, the directory under the root their content is moved to.
        archive_dir: folder inside the archive that becomes ``extract_to`` ("" = all of it).
        present_if: other paths under the root whose existence makes this file unnecessary
            (e.g. the raw IDX file for a ``.gz``, or the directory an archive extracts to).
        contents: for archives, paths inside ``extract_to`` that a complete extraction holds:
            a folder without them (an interrupted ``tar x``) does not count as extracted.
    """

    name: str
    urls: tuple[str, ...]
    digests: tuple[str, ...]
    size: int | None = None
    subdir: str = ""
    extract_to: str | None = None
    archive_dir: str = ""
    present_if: tuple[str, ...] = field(default=())
    contents: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"RemoteFile name must be a plain file name, got {self.name!r}")
        if not self.urls:
            raise ValueError(f"RemoteFile {self.name!r} needs at least one URL")
        if not self.digests:
            raise ValueError(f"RemoteFile {self.name!r} needs at least one checksum")
        for digest in self.digests:
            if not _DIGEST.match(digest):
                raise ValueError(
                    f"RemoteFile {self.name!r}: checksum {digest!r} is not 'ALGO:lowercase-hex' "
                    "with ALGO one of md5, sha1, sha256, sha512"
                )

    def directory(self, root: Path) -> Path:
        """Directory the file is written to."""
        return root.joinpath(*PurePosixPath(self.subdir).parts)

    def target(self, root: Path) -> Path:
        """Path the verified file is written to."""
        return self.directory(root) / self.name

    def satisfied(self, root: Path) -> bool:
        """True when nothing needs fetching: the extracted content, the file or an alternative."""
        if self.extract_to is not None:
            return self.extracted(root) or any(_under(root, p).exists() for p in self.present_if)
        target = self.target(root)
        verified = target.is_file() and not self.damaged(root)
        return verified or any(_under(root, p).exists() for p in self.present_if)

    def extracted(self, root: Path) -> bool:
        """Whether an archive's folder is in place with all its ``contents``."""
        assert self.extract_to is not None
        folder = _under(root, self.extract_to)
        return folder.is_dir() and all(_under(folder, p).exists() for p in self.contents)

    def damaged(self, root: Path) -> bool:
        """True when the file is at its target but fails its checksum (truncated, or another
        file under its name); an extracted archive's content has no checksum to check."""
        target = self.target(root)
        if self.extract_to is not None or not self.digests or not target.is_file():
            return False
        return verify_file(target, self.digests) is not None

    def with_mirror(self, base_url: str) -> RemoteFile:
        """This file fetched only from ``base_url`` + name (same checksums, same destination)."""
        return replace(self, urls=(f"{base_url.rstrip('/')}/{self.name}",))


def _under(root: Path, relative: str) -> Path:
    """``root`` joined with a ``/``-separated relative path."""
    return root.joinpath(*PurePosixPath(relative).parts)


# --- the official files ---------------------------------------------------------------------

_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)


def _idx_files(
    folder: str, mirrors: Sequence[str], table: Sequence[tuple[str, str, str, int]]
) -> tuple[RemoteFile, ...]:
    """RemoteFiles for IDX ``.gz`` files stored in torchvision's ``ROOT/folder/raw/``."""
    return tuple(
        RemoteFile(
            name=f"{stem}.gz",
            urls=tuple(f"{mirror}{stem}.gz" for mirror in mirrors),
            digests=(f"md5:{md5}", f"sha256:{sha256}"),
            size=size,
            subdir=f"{folder}/raw",
            present_if=(f"{folder}/raw/{stem}",),
        )
        for stem, md5, sha256, size in table
    )


# (stem, md5 as in torchvision, sha256 as in TensorFlow Datasets, size in bytes)
_MNIST_TABLE = (
    (
        "train-images-idx3-ubyte",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        9_912_422,
    ),
    (
        "train-labels-idx1-ubyte",
        "d53e105ee54ea40749a09fcbcd1e9432",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        28_881,
    ),
    (
        "t10k-images-idx3-ubyte",
        "9fb629c4189551a2d022fa330f9573f3",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        1_648_877,
    ),
    (
        "t10k-labels-idx1-ubyte",
        "ec29112dd5afa0611ce80d1b7f02629c",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        4_542,
    ),
)
_FASHION_TABLE = (
    (
        "train-images-idx3-ubyte",
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        26_421_880,
    ),
    (
        "train-labels-idx1-ubyte",
        "25c81989df183df01b3e8a0aad5dffbe",
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        29_515,
    ),
    (
        "t10k-images-idx3-ubyte",
        "bef4ecab320f06d8554ea6380940ec79",
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        4_422_102,
    ),
    (
        "t10k-labels-idx1-ubyte",
        "bb300cfdad3c16e7a12a480ee83cd310",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        5_148,
    ),
)

_MNIST_FILES = _idx_files("MNIST", _MNIST_MIRRORS, _MNIST_TABLE)

OFFICIAL_FILES: dict[str, tuple[RemoteFile, ...]] = {
    "mnist": _MNIST_FILES,
    "mnist-t10k": tuple(f for f in _MNIST_FILES if f.name.startswith("t10k")),
    "fashion_mnist": _idx_files("FashionMNIST", _FASHION_MIRRORS, _FASHION_TABLE),
    "cifar10": (
        RemoteFile(
            name="cifar-10-python.tar.gz",
            urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
            digests=(
                "md5:c58f30108f718f92721af3b95e74349a",
                "sha256:6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
            ),
            size=170_498_071,
            extract_to="cifar-10-batches-py",
            archive_dir="cifar-10-batches-py",
            contents=(*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
        ),
    ),
    "svhn": tuple(
        RemoteFile(
            name=f"{part}_32x32.mat",
            urls=(f"http://ufldl.stanford.edu/housenumbers/{part}_32x32.mat",),
            digests=(f"md5:{md5}", f"sha256:{sha256}"),
            size=size,
        )
        for part, md5, sha256, size in (
            (
                "train",
                "e26dedcc434d2e4c54c9b2d4a06d8373",
                "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",
                182_040_794,
            ),
            (
                "test",
                "eb5a983be6a315427106f1b164d9cef3",
                "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",
                64_275_384,
            ),
        )
    ),
    "speech_commands": (
        RemoteFile(
            name="speech_commands_v0.02.tar.gz",
            urls=(
                "https://storage.googleapis.com/download.tensorflow.org/data/"
                "speech_commands_v0.02.tar.gz",
                "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
            ),
            digests=("sha256:af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",),
            size=2_428_923_189,
            extract_to="SpeechCommands/speech_commands_v0.02",
            contents=("validation_list.txt", "testing_list.txt", "_background_noise_"),
        ),
    ),
}
"""Dataset name → the published files it is built from, with URLs (mirrors in order) and digests.

Sources of the digests: MNIST and FashionMNIST MD5 from torchvision, SHA-256 from TensorFlow
Datasets; CIFAR-10 MD5 from the publisher's page and torchvision, SHA-256 from Keras; SVHN MD5 from
torchvision, SHA-256 from TensorFlow Datasets; Speech Commands v0.02 SHA-256 from torchaudio and
TensorFlow Datasets.
"""


def official_files(name: str) -> tuple[RemoteFile, ...]:
    """The published files of dataset ``name`` (empty for datasets that need none, e.g. digits)."""
    if name not in dataset_names():
        raise UnknownDatasetError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}")
    return OFFICIAL_FILES.get(name, ())


# --- errors -----------------------------------------------------------------------------------


class DownloadError(DatasetNotFoundError):
    """A download failed; the one-line message says which files to place where by hand."""

    @classmethod
    def for_files(
        cls,
        dataset: str,
        root: Path,
        failed: RemoteFile,
        reasons: Sequence[str],
        remaining: Sequence[RemoteFile],
    ) -> DownloadError:
        """Build the error for ``failed`` (with ``reasons``) and the files not fetched after it."""
        todo = [failed, *remaining]
        groups: dict[Path, list[RemoteFile]] = {}
        for remote in todo:
            groups.setdefault(remote.directory(root), []).append(remote)
        places = []
        for directory, group in groups.items():
            names = ", ".join(r.name for r in group)
            source = _publisher_url(group[0]).rsplit("/", 1)[0] + "/"
            extract = "".join(
                f" (or its content extracted to {_under(root, r.extract_to)}/)"
                for r in group
                if r.extract_to is not None
            )
            places.append(f"{names} from {source} in {directory}/{extract}")
        reason = "; ".join(reasons) if reasons else "no URL left to try"
        err = cls(
            one_line(
                f"dataset {dataset!r}: could not download {failed.name} ({reason}); "
                f"place {'; '.join(places)}"
            )
        )
        err.missing = tuple(r.name for r in todo)
        err.searched = tuple(groups)
        return err


def _publisher_url(remote: RemoteFile) -> str:
    """Where the publisher serves ``remote`` (an official file of its name, in its folder),
    else its own first URL: a hint to fetch by hand must not name the mirror that failed."""
    for files in OFFICIAL_FILES.values():
        for official in files:
            if (official.name, official.subdir) == (remote.name, remote.subdir):
                return official.urls[0]
    return remote.urls[0]


class _FetchFailedError(Exception):
    """Internal: every URL of one file failed; ``reasons`` says why, one entry per attempt."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


class _WriteError(OSError):
    """Internal: the disk refused the ``.part`` (full, read-only): no network error, so no
    retry and no next mirror."""


_NETWORK_ERRORS = (OSError, http.client.HTTPException, ValueError)


# --- checksums ------------------------------------------------------------------------------


def _hashes(path: Path, algorithms: set[str]) -> dict[str, str]:
    """Hex digests of ``path`` for each algorithm, in one pass over the file."""
    hashers = {algo: hashlib.new(algo) for algo in algorithms}
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {algo: hasher.hexdigest() for algo, hasher in hashers.items()}


def verify_file(path: str | Path, digests: Sequence[str]) -> str | None:
    """None when ``path`` matches any of ``digests``, else a one-line reason why it does not."""
    path = Path(path)
    wanted = [d.split(":", 1) for d in digests]
    got = _hashes(path, {algo for algo, _ in wanted})
    if any(got[algo] == value for algo, value in wanted):
        return None
    shown = ", ".join(f"{algo} {got[algo]}" for algo in sorted(got))
    expected = " or ".join(digests)
    return f"checksum mismatch: got {shown}, expected {expected}"


# --- one HTTP transfer ----------------------------------------------------------------------


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse | None:
    """Open ``url`` asking for bytes from ``offset``; None when the server says it has no more."""
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # the .part already holds everything
            error.close()
            return None
        raise


def _transfer(
    url: str, part: Path, *, label: str, size: int | None, progress: bool | None, timeout: float
) -> None:
    """Stream ``url`` into ``part``, resuming it when it exists and the server allows ranges."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"only http(s) URLs can be downloaded, got {url!r}")
    offset = part.stat().st_size if part.exists() else 0
    response = _open(url, offset, timeout)
    if response is None:
        return
    with response:
        mode = "wb"
        if offset and response.status == 206:
            content_range = response.headers.get("Content-Range", "")
            if content_range.startswith(f"bytes {offset}-"):
                mode = "ab"
                logger.info("resuming %s at byte %d", label, offset)
            else:  # a range we did not ask for: start over
                part.unlink()
                response.close()
                _transfer(url, part, label=label, size=size, progress=progress, timeout=timeout)
                return
        elif offset:
            logger.info("%s does not support resuming; downloading %s again", url, label)
            offset = 0
        length = response.headers.get("Content-Length")
        remaining = int(length) if length is not None and length.isdigit() else None
        total = offset + remaining if remaining is not None else size
        received, cut = 0, False
        with (
            _open_part(part, mode) as out,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                disable=bar_disabled(progress),
                leave=False,
            ) as bar,
        ):
            try:
                while chunk := response.read(_CHUNK):
                    _write(out, chunk, part)
                    received += len(chunk)
                    bar.update(len(chunk))
            except http.client.IncompleteRead as short:  # the body ended early: said below
                _write(out, short.partial, part)
                received += len(short.partial)
                cut = True  # a chunked body has no Content-Length to compare with
        if cut or (remaining is not None and received < remaining):
            of = f" of {total:,}" if total is not None else ""
            raise ConnectionError(
                f"connection closed after {offset + received:,}{of} bytes "
                f"({offset + received:,} kept in {part.name} for a later resume)"
            )


def _refused(part: Path, error: OSError) -> _WriteError:
    """The :class:`_WriteError` of a write to ``part`` that the disk refused."""
    return _WriteError(error.errno, f"{part}: cannot write: {error.strerror}")


def _open_part(part: Path, mode: str) -> IO[bytes]:
    """``part`` opened with ``mode``; failing, a :class:`_WriteError` naming it."""
    try:
        return part.open(mode)
    except OSError as error:
        raise _refused(part, error) from error


def _write(out: IO[bytes], data: bytes, part: Path) -> None:
    """Write and flush ``data`` (so closing has nothing left to fail on); failing, a
    :class:`_WriteError` naming ``part``."""
    try:
        out.write(data)
        out.flush()
    except OSError as error:
        raise _refused(part, error) from error


def _download_one(
    remote: RemoteFile, root: Path, *, progress: bool | None, timeout: float, retries: int
) -> Path:
    """Get ``remote`` verified at its target (re-using a verified one already there)."""
    target = remote.target(root)
    if target.is_file():
        problem = verify_file(target, remote.digests)
        if problem is None:
            return target
        logger.warning("%s: %s; downloading it again", target, problem)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    reasons: list[str] = []
    for url in remote.urls:
        attempts = 0
        while True:
            attempts += 1
            before = part.stat().st_size if part.exists() else 0
            logger.info("downloading %s from %s", remote.name, url)
            try:
                _transfer(
                    url,
                    part,
                    label=remote.name,
                    size=remote.size,
                    progress=progress,
                    timeout=timeout,
                )
            except _WriteError:
                raise  # the disk's, not the server's: no other URL helps
            except _NETWORK_ERRORS as error:
                reasons.append(f"{url}: {one_line(error) or type(error).__name__}")
                grew = part.exists() and part.stat().st_size > before
                if grew and attempts <= retries:
                    continue  # interrupted after making progress: resume
                break  # next mirror (the .part stays for a later resume)
            problem = verify_file(part, remote.digests)
            if problem is None:
                os.replace(part, target)
                logger.info("verified %s", target)
                return target
            part.unlink()
            reasons.append(f"{url}: {problem}")
            if before and attempts <= retries:
                continue  # the resumed part may have been stale: retry from scratch
            break
    raise _FetchFailedError(reasons)


# --- archives -------------------------------------------------------------------------------


def _checked_members(tar: tarfile.TarFile, dest: Path, archive: Path) -> list[tarfile.TarInfo]:
    """Members of ``tar`` that are plain files or directories inside ``dest``; others refused."""
    base = dest.resolve()
    members = []
    for member in tar.getmembers():
        name = PurePosixPath(member.name)
        if not (member.isfile() or member.isdir()):
            raise DatasetFormatError(
                f"{archive}: refusing member {member.name!r}: only files and directories are "
                "extracted"
            )
        if name.is_absolute() or ".." in name.parts:
            raise DatasetFormatError(
                f"{archive}: refusing member {member.name!r}: it would be written outside {dest}"
            )
        if not (base / name).resolve().is_relative_to(base):
            raise DatasetFormatError(
                f"{archive}: refusing member {member.name!r}: it would be written outside {dest}"
            )
        members.append(member)
    return members


def extract_archive(
    archive: str | Path, dest: str | Path, *, filter_supported: bool | None = None
) -> None:
    """Extract a tar archive (any compression) into ``dest``, refusing members outside ``dest``.

    Uses tarfile's ``data`` filter where Python provides it (3.12, and 3.10.12/3.11.4 onwards),
    else checks every member itself (plain files and directories only, no ``..``, no absolute
    paths). ``filter_supported`` overrides the detection (for tests).

    Raises:
        DatasetFormatError: the archive is corrupt or has a member that would escape ``dest``.
        OSError: writing failed (a full disk: one line naming the archive and ``dest``).
    """
    archive, dest = Path(archive), Path(dest)
    use_filter = hasattr(tarfile, "data_filter") if filter_supported is None else filter_supported
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            if use_filter:
                tar.extractall(dest, filter="data")
            else:
                tar.extractall(dest, members=_checked_members(tar, dest, archive))
    except DatasetFormatError:
        raise
    except getattr(tarfile, "FilterError", ()) as error:
        raise DatasetFormatError(f"{archive}: refusing to extract: {one_line(error)}") from error
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        if isinstance(error, PermissionError):
            raise
        if isinstance(error, OSError) and error.errno is not None:  # the disk (full…), not the
            raise OSError(  # archive: a damaged gzip stream is an OSError without an errno
                error.errno, f"{archive}: cannot extract into {dest}: {error.strerror}"
            ) from error
        raise DatasetFormatError(f"{archive}: corrupt archive: {one_line(error)}") from error


def _extract_into_place(archive: Path, remote: RemoteFile, root: Path) -> Path:
    """Extract ``archive`` beside its destination, then rename ``archive_dir`` into place."""
    assert remote.extract_to is not None
    final = _under(root, remote.extract_to)
    final.parent.mkdir(parents=True, exist_ok=True)
    for leftover in sorted(final.parent.glob(f".{final.name}.extract-*")):
        logger.warning(
            "%s: left by an extraction that was killed (or one running beside this); delete it "
            "to free %s MB",
            leftover,
            f"{disk_usage(leftover) / 1e6:,.0f}",
        )
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.extract-", dir=final.parent))
    try:
        logger.info("extracting %s to %s", archive, final)
        extract_archive(archive, scratch)
        source = _under(scratch, remote.archive_dir) if remote.archive_dir else scratch
        if not source.is_dir():
            raise DatasetFormatError(f"{archive}: has no folder {remote.archive_dir!r}")
        if final.exists() and not remote.extracted(root):
            aside = _unused_name(final.with_name(f"{final.name}.incomplete"))
            logger.warning("%s lacks files of %s: moved aside to %s", final, archive, aside.name)
            os.replace(final, aside)
        if final.exists():
            raise FileExistsError(f"{final} appeared while extracting {archive}; not replacing it")
        if source == scratch:  # mkdtemp made it private (0700): give it the usual permissions
            umask = os.umask(0)
            os.umask(umask)
            source.chmod(0o777 & ~umask)
        os.replace(source, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final


def _unused_name(path: Path) -> Path:
    """``path``, or ``path.2``, ``path.3``... the first that does not exist."""
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}.{number}")
    return candidate


# --- entry points ---------------------------------------------------------------------------


def fetch(
    dataset: str,
    root: str | Path | None,
    files: Sequence[RemoteFile],
    *,
    progress: bool | None = None,
    timeout: float = 60.0,
    retries: int = 2,
) -> list[Path]:
    """Download, verify and (archives) extract every file of ``files`` not yet under ``root``.

    Returns the paths written. ``retries`` is how often an interrupted transfer is resumed (or a
    stale ``.part`` restarted) per URL before the next mirror is tried.

    Raises:
        DownloadError: a file could not be fetched from any URL or failed its checksum; one line
            naming every file still to fetch and the directory it belongs in.
        DatasetFormatError: a downloaded archive is corrupt or unsafe.
        OSError: the disk refused a write (full, read-only): one line naming the file.
    """
    base = data_root(root)
    written: list[Path] = []
    todo = [remote for remote in files if not remote.satisfied(base)]
    for index, remote in enumerate(todo):
        try:
            path = _download_one(remote, base, progress=progress, timeout=timeout, retries=retries)
        except _FetchFailedError as failure:
            raise DownloadError.for_files(
                dataset, base, remote, failure.reasons, todo[index + 1 :]
            ) from None
        written.append(path)
        if remote.extract_to is not None:
            written.append(_extract_into_place(path, remote, base))
    return written


def locate_or_download(
    dataset: str,
    root: str | Path | None,
    locate: Callable[[str | Path | None], DatasetStatus],
    download: bool | Sequence[RemoteFile],
    *,
    progress: bool | None = None,
) -> DatasetStatus:
    """Find a dataset's files, fetching them first when missing and ``download`` asks for it.

    ``download`` is False (never fetch), True (the official files) or the files to fetch instead.

    Raises:
        DatasetNotFoundError: still missing (one line saying what to put where).
    """
    status = locate(root)
    if not status.present and download is not False:
        files = official_files(dataset) if download is True else tuple(download)
        fetch(dataset, root, files, progress=progress)
        status = locate(root)
    elif not status.present and OFFICIAL_FILES.get(dataset):
        fetch_them = (
            f"or fetch them: walking-noise data download {dataset} --root {data_root(root)}"
        )
        status = replace(status, hint=f"{status.hint}; {fetch_them}" if status.hint else fetch_them)
    status.require()
    return status


def damaged_files(files: Sequence[RemoteFile], root: str | Path | None) -> list[RemoteFile]:
    """The files of ``files`` that are on disk under ``root`` but fail their checksum."""
    base = data_root(root)
    return [remote for remote in files if remote.damaged(base)]


def download_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    files: Sequence[RemoteFile] | None = None,
    mirror: str | None = None,
    progress: bool | None = None,
    timeout: float = 60.0,
) -> DatasetStatus:
    """Fetch dataset ``name`` into ``root`` unless it is already there; return what is on disk.

    ``files`` replaces the official file list; ``mirror`` fetches every file from that base URL
    instead of the publisher's (checksums unchanged).

    Raises:
        DownloadError: a file could not be fetched or verified (one line: what to place where).
    """
    remote = tuple(official_files(name) if files is None else files)
    if mirror is not None:
        remote = tuple(f.with_mirror(mirror) for f in remote)
    status = dataset_status(name, root)
    if status.present:
        logger.info("dataset %s is already present in %s", name, data_root(root))
        return status
    fetch(name, root, remote, progress=progress, timeout=timeout)
    status = dataset_status(name, root)
    status.require()
    return status
