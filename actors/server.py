"""The runtime and its gateway in one process: `cubestream serve`, the demo and the tests start it here.

    with Service(cfg) as svc:                 # embedded local Ray (or address="auto" to join a cluster)
        client = Client(svc.url, svc.token)

With `server.tls_cert` and `server.tls_key` the gateway speaks HTTPS only (API and WHIP); without them,
listening on anything but loopback logs a warning: the bearer token would cross the network in clear.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import secrets
import ssl
import threading

import ray
from aiohttp import web

from actors.gateway import Gateway
from actors.runtime import start_controller
from actors.validation import CLIENT_ERROR_LOGGER
from configs import Config, ServerConfig

log = logging.getLogger(__name__)


class Service:
    """Starts Ray (unless it is running), the controller and its actors, and the HTTP gateway on a
    thread of its own; `close` stops them in reverse order."""

    def __init__(self, cfg: Config, address: str | None = None, token: str | None = None, port: int | None = None,
                 num_cpus: int | None = None):
        self.cfg, self.address, self.num_cpus = cfg, address, num_cpus
        self.token = token or cfg.server.token or os.environ.get("CUBESTREAM_TOKEN") or secrets.token_urlsafe(24)
        self.port = cfg.server.port if port is None else port
        self.url: str | None = None
        self.controller = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._owns_ray = False

    def start(self) -> Service:
        if self.cfg.model.vlm:  # an unknown id, a folder that is no VLM, an unsupported family: refused here
            from models.vlm import family_of

            family_of(self.cfg.model.vlm)
        tls = tls_context(self.cfg.server)  # a bad certificate fails here, before anything is started
        if tls is None and not is_loopback(self.cfg.server.host):
            log.warning("the gateway listens on %s without TLS: the bearer token and every answer cross the network "
                        "in clear; set server.tls_cert and server.tls_key", self.cfg.server.host)
        if not ray.is_initialized():
            ray.init(address=self.address, num_cpus=self.num_cpus if self.address is None else None,
                     include_dashboard=False, log_to_driver=False)
            self._owns_ray = True
        self.controller = start_controller(self.cfg)
        gateway = Gateway(self.controller, self.cfg, self.token)
        self._loop = asyncio.new_event_loop()
        started = threading.Event()

        def run():
            asyncio.set_event_loop(self._loop)
            # lingering: how long the rest of a body the server did not want may still be read before the
            # connection closes (aiohttp's default 10 s); no longer than a body may take at all
            self._runner = web.AppRunner(gateway.app(), access_log=None, logger=CLIENT_ERROR_LOGGER,
                                         lingering_time=self.cfg.server.body_timeout)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.cfg.server.host, self.port, ssl_context=tls)
            self._loop.run_until_complete(site.start())
            self.port = self._runner.addresses[0][1]
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="gateway", daemon=True)
        self._thread.start()
        started.wait()
        host = self.cfg.server.host
        self.url = f"{'https' if tls else 'http'}://{f'[{host}]' if ':' in host else host}:{self.port}"
        return self

    def close(self) -> None:
        """Stop the gateway (and the ingests it runs), have every stream's state saved, then stop the rest."""
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if self.controller is not None:
            try:
                ray.get(self.controller.save_all.remote(), timeout=self.cfg.runtime.request_timeout + 5)
            except Exception as e:  # a stream not saved now resumes from its last saved cube
                log.warning("saving the streams' states at shutdown failed: %s", e)
            ray.kill(self.controller)  # its actors are owned by it and go with it
        if self._owns_ray:
            ray.shutdown()

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def tls_context(cfg: ServerConfig) -> ssl.SSLContext | None:
    """The server's TLS context from server.tls_cert / server.tls_key (PEM files), or None without them."""
    if cfg.tls_cert is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(os.path.expanduser(cfg.tls_cert), os.path.expanduser(cfg.tls_key))
    return ctx


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name or "" (every interface)
        return False
