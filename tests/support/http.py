"""A real HTTP server for tests whose answers are a plain function of the request: ``answer(path, headers)``
returns (status, body, announced length). The announced length may exceed the body (a connection cut
mid-body)."""

from __future__ import annotations

import http.server
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.message import Message

Answer = Callable[[str, Message], tuple[int, bytes, int | None]]


class Site:
    """``with Site.serving(answer) as site: site.url``; ``site.requests`` counts requests per path."""

    def __init__(self, answer: Answer) -> None:
        self.requests: Counter[str] = Counter()
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.requests[self.path] += 1
                status, body, length = answer(self.path, self.headers)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return  # the tests read site.requests, not the access log

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @classmethod
    @contextmanager
    def serving(cls, answer: Answer) -> Iterator[Site]:
        site = cls(answer)
        threading.Thread(target=site._httpd.serve_forever, daemon=True).start()
        try:
            yield site
        finally:
            site._httpd.shutdown()
            site._httpd.server_close()
