"""The runtime and its gateway in one process: `cubestream serve`, the demo and the tests start it here.

    with Service(cfg) as svc:                 # embedded local Ray (or address="auto" to join a cluster)
        client = Client(svc.url, svc.token)
"""
from __future__ import annotations

import asyncio
import os
import secrets
import threading

import ray
from aiohttp import web

from actors.gateway import Gateway
from actors.runtime import start_controller
from configs import Config


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
            self._runner = web.AppRunner(gateway.app(), access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.cfg.server.host, self.port)
            self._loop.run_until_complete(site.start())
            self.port = self._runner.addresses[0][1]
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="gateway", daemon=True)
        self._thread.start()
        started.wait()
        self.url = f"http://{self.cfg.server.host}:{self.port}"
        return self

    def close(self) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if self.controller is not None:
            ray.kill(self.controller)  # its actors are owned by it and go with it
        if self._owns_ray:
            ray.shutdown()

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
