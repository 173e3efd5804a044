"""A TCP proxy on 127.0.0.1 that can be cut and restored: the fault "the server is down" without stopping the
server (restarting a server on the same port races the kernel and the rest of a busy test run for that
port)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class Proxy:
    """``with Proxy.serving(port_of_target) as proxy``: ``proxy.url``; ``proxy.up = False`` cuts every new and
    open connection (the client sees them closed), ``True`` forwards again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = True
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @classmethod
    @contextmanager
    def serving(cls, target_port: int) -> Iterator[Proxy]:
        proxy = cls(target_port)
        threading.Thread(target=proxy._accept, daemon=True).start()
        try:
            yield proxy
        finally:
            proxy._listener.close()
            proxy.cut()

    def cut(self) -> None:
        with self._lock:
            for sock in self._open:
                sock.close()
            self._open.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if not self.up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        """Copy ``src`` to ``dst`` until either side closes (a cut closes both: the OSError it raises ends the
        copy)."""
        with suppress(OSError):
            while self.up and (data := src.recv(65536)):
                dst.sendall(data)
        for sock in (src, dst):
            with suppress(OSError):
                sock.close()
