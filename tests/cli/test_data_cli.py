"""``walking-noise data list`` and ``data download``: tables, one-line errors, no internet."""

from __future__ import annotations

import functools
import gzip
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from walkingnoise.cli import main
from walkingnoise.data import dataset_names

from ..data.helpers import T10K_IMAGES, T10K_LABELS
from ..data.http_server import FileServer, RunningServer

MNIST_T10K = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist-t10k"


def _idx(array: np.ndarray) -> bytes:
    """A uint8 array as an IDX file."""
    dims = np.asarray(array.shape, dtype=">u4").tobytes()
    return bytes([0, 0, 8, array.ndim]) + dims + array.tobytes()


@pytest.fixture
def fashion_root(tmp_path: Path) -> Path:
    """A data root with tiny FashionMNIST files in ROOT/FashionMNIST/raw/."""
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for part, n in (("train", 20), ("t10k", 5)):
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        (raw / f"{part}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
        (raw / f"{part}-labels-idx1-ubyte").write_bytes(_idx(np.zeros(n, dtype=np.uint8)))
    return tmp_path / "root"


@pytest.fixture
def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server serving the files of a directory: (base URL, directory)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("walking-noise: error: ")
    return lines[0]


def test_list_shows_every_dataset_with_presence_and_size(
    fashion_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "list", "--root", str(fashion_root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"data root: {fashion_root}"
    assert out[1].split() == ["DATASET", "PRESENT", "SIZE", "DOWNLOAD", "LOCATION"]
    rows = {line.split()[0]: line for line in out[2:]}
    assert sorted(rows) == dataset_names()
    assert rows["fashion_mnist"].split()[1] == "yes"
    assert str(fashion_root / "FashionMNIST" / "raw") in rows["fashion_mnist"]
    assert rows["cifar10"].split()[1:3] == ["no", "-"]
    assert f"looked in {fashion_root}" in rows["cifar10"]
    assert "170.5 MB" in rows["cifar10"]  # the published archive's size
    assert "2.4 GB" in rows["speech_commands"]
    assert rows["digits"].split()[1] == "yes"


def test_list_size_of_real_mnist_t10k(capsys: pytest.CaptureFixture[str]) -> None:
    if not (MNIST_T10K / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("../shared/data/mnist-t10k not found")
    assert main(["data", "list", "--data-root", str(MNIST_T10K)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["mnist-t10k"][1:4] == ["yes", "1.7", "MB"]
    assert rows["mnist"][1] == "partly"  # the train files are missing


def test_download_present_dataset_does_nothing(
    fashion_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = fashion_root / "FashionMNIST" / "raw"
    before = {path: path.read_bytes() for path in raw.iterdir()}
    assert main(["data", "download", "fashion_mnist", "--root", str(fashion_root)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("fashion_mnist: already present (")
    # these tiny files are not the published ones: said, and left as they are
    warned = [line.split(": ")[1] for line in captured.err.splitlines()]
    assert warned == [
        str(raw / "train-images-idx3-ubyte.gz"),
        str(raw / "t10k-images-idx3-ubyte.gz"),
    ]
    assert all(
        "does not match the published checksum" in line for line in captured.err.splitlines()
    )
    assert {path: path.read_bytes() for path in raw.iterdir()} == before


def test_download_without_network_says_what_to_place_where(
    tmp_path: Path, closed_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    code = main(["data", "download", "mnist", "--root", str(root), "--mirror", closed_url])
    assert code == 2
    line = _error_line(capsys)
    names = "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    names += "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz"
    publisher = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # not the mirror that failed
    assert f"place {names} from {publisher} in {root / 'MNIST' / 'raw'}/" in line
    assert f"{closed_url.rstrip('/')}/train-images-idx3-ubyte.gz: " in line  # the why
    assert not any(root.rglob("*.gz"))


def test_download_with_wrong_bytes_fails_on_the_checksum(
    tmp_path: Path, mirror: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, served = mirror
    (served / "cifar-10-python.tar.gz").write_bytes(b"an error page, not the archive")
    root = tmp_path / "root"
    assert main(["data", "download", "cifar10", "--root", str(root), "--mirror", url]) == 2
    line = _error_line(capsys)
    assert "checksum mismatch" in line
    assert "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce" in line
    assert not (root / "cifar-10-python.tar.gz").exists()
    assert not (root / "cifar-10-batches-py").exists()


def test_download_of_the_real_mnist_t10k_bytes_through_a_mirror(
    tmp_path: Path, mirror: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # The shared copy is re-compressed, so its bytes match no published checksum: refused.
    if not (MNIST_T10K / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("../shared/data/mnist-t10k not found")
    url, served = mirror
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copyfile(MNIST_T10K / name, served / name)
    root = tmp_path / "root"
    assert main(["data", "download", "mnist-t10k", "--root", str(root), "--mirror", url]) == 2
    line = _error_line(capsys)
    assert "could not download t10k-images-idx3-ubyte.gz" in line
    assert "md5:9fb629c4189551a2d022fa330f9573f3" in line


def test_unknown_dataset_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "download", "imagenet", "--root", str(tmp_path)]) == 2
    assert "unknown dataset 'imagenet'; known: cifar10" in _error_line(capsys)


def test_download_from_a_server_that_hangs_gives_up_after_the_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server answers only after 5 s (then with a 404): with --timeout 0.5 the download
    says it timed out instead of waiting for it."""
    state = FileServer(stalls={f"/{name}.gz": 5.0 for name in (T10K_IMAGES, T10K_LABELS)})
    with RunningServer(state):
        root = tmp_path / "root"
        args = ["data", "download", "mnist-t10k", "--root", str(root), "--mirror", state.url("/")]
        assert main([*args, "--timeout", "0.5"]) == 2
    line = _error_line(capsys)
    assert f"{state.url('/')}{T10K_IMAGES}.gz: timed out" in line
    assert "HTTP Error 404" not in line
    assert main([*args, "--timeout", "0"]) == 2
    assert _error_line(capsys).endswith("--timeout must be a positive number of seconds, got 0.0")
