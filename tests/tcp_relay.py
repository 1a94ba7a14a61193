"""A TCP relay in front of a server that a test can cut and restore: while cut, its open connections are
closed and new ones refused, exactly what a client sees of a server that went away; restored, it listens on
the same address again. The server behind it keeps running, so a test need not restart it."""
from __future__ import annotations

import socket
import threading


class TcpRelay:
    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1"):
        self.target, self.host, self.port = target, host, 0
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> TcpRelay:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        """Refuse new connections and close the open ones; `start` listens again on the same port."""
        listener, self._listener = self._listener, None
        _close(listener)
        with self._lock:
            for s in self._open:
                _close(s)
            self._open.clear()

    def close(self) -> None:
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # cut
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)
            _close(src)
            _close(dst)


def _close(s: socket.socket | None) -> None:
    """shutdown first: it wakes a thread blocked in accept or recv on the socket (close alone does not)."""
    if s is not None:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()
