"""A Python client for the HTTP API (standard library only, so scripts need nothing else).

    client = Client("http://127.0.0.1:8080", token)
    client.add("cam1", "rtsp://camera/stream1")
    client.ask("cam1", "what colour is the car that left ?", start=60, end=120)
    client.ask("cam1", "is the red car still there ?", options=["yes", "no"])
    client.add_watch("cam1", "How many objects are in view?", answer=["1", "2", "3"], cooldown_s=60)
    for event in client.follow_events(): ...               # Server-Sent Events, resumable by event id
    client.search("When did a red circle last enter?", streams=["cam1"])
    client.chat("cam1", "What colour is the bar?")          # through the OpenAI-compatible endpoint
"""
from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator


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

    # -- watches and events --

    def add_watch(self, stream_id: str, question: str, answer: str | list[str] | None = None, **settings) -> dict:
        """A standing query; `answer`: what fires it (None: a yes/no question, fires on yes). `settings`:
        id, options, window_s, confirm, clear_s, cooldown_s (see docs/api.md)."""
        body = {"question": question} | ({"answer": answer} if answer is not None else {}) | settings
        return self._call("POST", f"/streams/{_q(stream_id)}/watches", body)

    def watches(self, stream_id: str | None = None) -> list[dict]:
        return self._call("GET", f"/streams/{_q(stream_id)}/watches" if stream_id else "/watches")

    def watch(self, stream_id: str, watch_id: str) -> dict:
        return self._call("GET", f"/streams/{_q(stream_id)}/watches/{_q(watch_id)}")

    def remove_watch(self, stream_id: str, watch_id: str) -> dict:
        return self._call("DELETE", f"/streams/{_q(stream_id)}/watches/{_q(watch_id)}")

    def events(self, since: float | None = None, after: int | None = None, stream: str | None = None,
               watch: str | None = None, limit: int | None = None) -> list[dict]:
        """Kept events, oldest first: after unix time `since`, after event id `after`, of a stream or watch."""
        return self._call("GET", "/events" + _query(since=since, after=after, stream=stream, watch=watch, limit=limit))

    def follow_events(self, last_event_id: int | None = None, stream: str | None = None,
                      timeout: float | None = None) -> Iterator[dict]:
        """Events as they happen (Server-Sent Events), after `last_event_id` if given; runs until closed."""
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        req = urllib.request.Request(self.url + "/events" + _query(stream=stream), headers=headers)
        try:
            r = urllib.request.urlopen(req, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as e:
            raise ClientError(e.code, e.read().decode(errors="replace").strip()) from None
        with r:
            data = []
            for line in r:
                line = line.decode().rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    yield json.loads("\n".join(data))
                    data = []

    # -- search and chat --

    def search(self, q: str, streams: list[str] | None = None, start: float | None = None, end: float | None = None,
               limit: int | None = None) -> list[dict]:
        """Memory entries across streams, most relevant to `q` first: stream, entry, start, end, score, thumbnail."""
        return self._call("GET", "/search" + _query(q=q, streams=",".join(streams) if streams else None, start=start,
                                                    end=end, limit=limit))

    def chat(self, stream_id: str, question: str, start: float | None = None, end: float | None = None) -> dict:
        """A `chat.completion` from the OpenAI-compatible endpoint (the answer: ["choices"][0]["message"]["content"])."""
        body = {"model": f"cubestream/{stream_id}", "messages": [{"role": "user", "content": question}]}
        return self._call("POST", "/v1/chat/completions", body | {k: v for k, v in (("start", start), ("end", end))
                                                                  if v is not None})

    def models(self) -> list[str]:
        return [m["id"] for m in self._call("GET", "/v1/models")["data"]]

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
                text = text["message"] if isinstance(text, dict) else text  # the OpenAI endpoint's shape
            except (ValueError, KeyError, TypeError):
                text = text.strip()
            raise ClientError(e.code, text) from None
        except urllib.error.URLError as e:  # no connection, or a certificate this client does not trust
            raise ClientError(0, f"cannot reach {self.url}: {e.reason}") from None
        if ctype == "application/json":
            return json.loads(raw)
        return raw.decode() if ctype.startswith("text/") else raw


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _query(**params) -> str:
    kept = {k: v for k, v in params.items() if v is not None}
    return "?" + urllib.parse.urlencode(kept) if kept else ""
