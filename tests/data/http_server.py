"""A local HTTP server for download tests: serves bytes, can ignore ranges or cut transfers."""

from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class FileServer:
    """State of the test server: what it serves and what it was asked.

    ``files`` maps a path (``/name``) to its bytes. With ``ranges`` off, ``Range`` headers are
    ignored (full 200 responses). ``cuts[path] = (n, k)`` drops the connection after ``k`` body
    bytes on the next ``n`` requests of that path. ``stalls[path]`` is how many seconds the
    server waits before it answers a request of that path (a server that hangs). With
    ``chunked`` on, bodies are sent with ``Transfer-Encoding: chunked`` in chunks of 1,024 bytes
    and without a ``Content-Length`` (a cut then ends inside a chunk).
    """

    files: dict[str, bytes] = field(default_factory=dict)
    ranges: bool = True
    cuts: dict[str, tuple[int, int]] = field(default_factory=dict)
    stalls: dict[str, float] = field(default_factory=dict)
    chunked: bool = False
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    base_url: str = ""

    def url(self, path: str) -> str:
        """Full URL of ``path`` on this server."""
        return f"{self.base_url}{path}"


def _chunked(body: bytes, keep: int | None = None) -> bytes:
    """``body`` in the chunked transfer coding, or only its first ``keep`` bytes (cut inside a
    chunk, without the last chunk: what a dropped connection leaves)."""
    wire = b""
    for start in range(0, len(body), 1024):
        chunk = body[start : start + 1024]
        if keep is not None and start + len(chunk) > keep:
            return wire + b"%x\r\n" % len(chunk) + chunk[: keep - start]
        wire += b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    return wire + b"0\r\n\r\n"


def _handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            header = self.headers.get("Range")
            state.requests.append((self.path, header))
            time.sleep(state.stalls.get(self.path, 0.0))
            data = state.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", header or "")
            if state.ranges and match:
                start = int(match.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            if state.chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            wire = _chunked(body) if state.chunked else body
            times, keep = state.cuts.get(self.path, (0, 0))
            if times > 0:
                state.cuts[self.path] = (times - 1, keep)
                self.wfile.write(_chunked(body, keep) if state.chunked else body[:keep])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(wire)

    return Handler


class _Server(ThreadingHTTPServer):
    """The test server; a client that hangs up mid-body (as the interruption tests make it) is
    no error to print: its handler thread may outlive the test, and its traceback on stderr
    would land in a later test's captured output."""

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class RunningServer:
    """Context manager running a :class:`FileServer` on 127.0.0.1 in a thread."""

    def __init__(self, state: FileServer) -> None:
        self.state = state
        self.httpd = _Server(("127.0.0.1", 0), _handler(state))
        self.httpd.daemon_threads = True
        host, port = self.httpd.server_address[:2]
        state.base_url = f"http://{host}:{port}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self.state

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
