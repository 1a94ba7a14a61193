"""A Python client for the HTTP API (standard library only, so scripts need nothing else).

    client = Client("http://127.0.0.1:8080", token)
    client.add("cam1", "rtsp://camera/stream1")
    client.ask("cam1", "what colour is the car that left ?", start=60, end=120)
    client.ask("cam1", "is the red car still there ?", options=["yes", "no"])
"""
from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request


class ClientError(Exception):
    """The service answered with an error status; `status` is the HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class Client:
    """`ssl_context`: for an https URL whose certificate the system does not trust (a self-signed one:
    `ssl.create_default_context(cafile="cert.pem")`)."""

    def __init__(self, url: str, token: str, timeout: float = 60.0, ssl_context: ssl.SSLContext | None = None):
        self.url, self.token, self.timeout, self.ssl_context = url.rstrip("/"), token, timeout, ssl_context

    def health(self) -> dict:
        return self._call("GET", "/health")

    def add(self, stream_id: str, source: str) -> dict:
        return self._call("POST", "/streams", {"id": stream_id, "source": source})

    def streams(self) -> list[dict]:
        return self._call("GET", "/streams")

    def stream(self, stream_id: str) -> dict:
        return self._call("GET", f"/streams/{stream_id}")

    def remove(self, stream_id: str) -> dict:
        return self._call("DELETE", f"/streams/{stream_id}")

    def timeline(self, stream_id: str) -> list[dict]:
        return self._call("GET", f"/streams/{stream_id}/timeline")

    def thumbnail(self, stream_id: str, entry_id: int) -> bytes:
        """The JPEG of a timeline entry."""
        return self._call("GET", f"/streams/{stream_id}/thumbnails/{entry_id}")

    def ask(self, stream_id: str, question: str, start: float | None = None, end: float | None = None,
            options: list[str] | None = None) -> dict:
        """The answer: free text, or one of `options` (with `option_logprobs`, each one's log-likelihood)."""
        body = {"question": question} | {k: v for k, v in (("start", start), ("end", end), ("options", options))
                                         if v is not None}
        return self._call("POST", f"/streams/{stream_id}/ask", body)

    def metrics(self) -> str:
        return self._call("GET", "/metrics")

    def _call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ssl_context) as r:
                raw, ctype = r.read(), r.headers.get_content_type()
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:
                text = json.loads(text)["error"]
            except (ValueError, KeyError, TypeError):
                text = text.strip()
            raise ClientError(e.code, text) from None
        except urllib.error.URLError as e:  # no connection, or a certificate this client does not trust
            raise ClientError(0, f"cannot reach {self.url}: {e.reason}") from None
        if ctype == "application/json":
            return json.loads(raw)
        return raw.decode() if ctype.startswith("text/") else raw
