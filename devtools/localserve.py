"""A local HTTP video server for the offline demo, the tests and the benchmarks.

Serves files under ``/v/<youtube_id>.mp4`` with HTTP Range support (what yt-dlp and ffmpeg use to fetch just a
segment), counts the bytes it sends per video, and can be told to answer a video with an HTTP status (404,
429, 503) or an HTML page with no media, so that every failure class of the downloader can be exercised for
real. Binds to 127.0.0.1 unless told otherwise (the compose stack's video server listens on its container
network).
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import re
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Literal

log = logging.getLogger(__name__)

Route = Path | int | Literal["html"]
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class VideoServer:
    """``with VideoServer({"abcdefghijk": Path("a.mp4")}) as srv: srv.url_template`` -> a running server.

    Attributes:
        routes: youtube id -> a file to serve, an HTTP status to answer, or ``"html"`` (a page, no media).
        bytes_sent: youtube id -> body bytes sent so far.
        requests: youtube id -> number of requests.
    """

    def __init__(
        self,
        routes: dict[str, Route] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        throttle_bps: float | None = None,
        files: dict[str, Path] | None = None,
    ) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.files: dict[str, Path] = dict(
            files or {}
        )  # other paths served as they are, e.g. "/annotations.csv"
        self.throttle_bps = (
            throttle_bps  # pace the bodies (a slow network), for tests that interrupt downloads
        )
        self.bytes_sent: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._httpd = http.server.ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        if isinstance(host, bytes):
            host = host.decode()
        return f"http://{host}:{port}"

    @property
    def url_template(self) -> str:
        """The downloader's ``url_template`` for this server."""
        return f"{self.base_url}/v/{{youtube_id}}.mp4"

    def start(self) -> VideoServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="video-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> VideoServer:
        return self.start()

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        self.stop()

    def _count(self, video: str, sent: int) -> None:
        with self._lock:
            self.bytes_sent[video] += sent

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        return type("Handler", (_VideoHandler,), {"video_server": self})


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=A-B``, ``bytes=A-`` or ``bytes=-N`` of a file of ``size`` bytes as (start, end), inclusive;
    None when the header is not a single byte range. A start past the end is returned as is (the caller
    answers 416)."""
    found = _RANGE.match(header.strip())
    if not found or (not found.group(1) and not found.group(2)):
        return None
    if found.group(1):
        start = int(found.group(1))
        return start, min(int(found.group(2)), size - 1) if found.group(2) else size - 1
    return max(0, size - int(found.group(2))), size - 1  # suffix range: the last N bytes


class _VideoHandler(http.server.BaseHTTPRequestHandler):
    """Answers for a :class:`VideoServer` (``video_server``, set on a subclass per server)."""

    video_server: VideoServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # A small send buffer: bytes counted as sent are bytes the client really took, give or take
        # 64 KiB, rather than megabytes parked in kernel buffers when a client stops reading early.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)

    def log_message(self, fmt: str, *args: object) -> None:
        log.debug("video-server: " + fmt, *args)

    def handle(self) -> None:
        # Clients (yt-dlp sniffing, ffmpeg seeking) hang up early on purpose.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            super().handle()

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _plain(self, status: int, text: str, content_type: str = "text/plain") -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if status == 429:
            self.send_header("Retry-After", "1")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _serve(self, body: bool) -> None:
        static = self.video_server.files.get(self.path.split("?", 1)[0])
        if static is not None:
            self._send_file(static, "", body, "text/csv" if static.suffix == ".csv" else "video/mp4")
            return
        match = re.fullmatch(r"/v/([^/]+)\.mp4", self.path.split("?", 1)[0])
        video = match.group(1) if match else ""
        with self.video_server._lock:
            self.video_server.requests[video] += 1
        route = self.video_server.routes.get(video)
        if route is None:
            self._plain(404, "not found")
            return
        if isinstance(route, int):
            self._plain(route, f"status {route}")
            return
        if route == "html":
            self._plain(200, "<html><body><p>No video here.</p></body></html>", "text/html")
            return
        self._send_file(Path(route), video, body)

    def _send_file(self, path: Path, video: str, body: bool, content_type: str = "video/mp4") -> None:
        size = path.stat().st_size
        header = self.headers.get("Range")
        wanted = byte_range(header, size) if header else (0, size - 1)
        if wanted is None:
            self._plain(416, "bad range")
            return
        start, end = wanted
        if start >= size or start > end:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status = 206 if header else 200
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body:
            return
        sent = 0
        try:
            with path.open("rb") as fh:
                fh.seek(start)
                while sent < length:
                    block = fh.read(min(1 << 16, length - sent))
                    if not block:
                        break
                    self.wfile.write(block)
                    sent += len(block)
                    if self.video_server.throttle_bps:
                        time.sleep(len(block) / self.video_server.throttle_bps)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: normal when ffmpeg has what it needs
        finally:
            self.video_server._count(video, sent)
