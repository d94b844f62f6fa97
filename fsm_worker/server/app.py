"""The signaling server as an aiohttp application: create it, start it on a port, or serve until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

import attrs
from aiohttp import web

from fsm_worker.logfmt import log_event
from fsm_worker.server.config import ServerConfig
from fsm_worker.server.registry import Registry
from fsm_worker.server.server import SignalingServer

log = logging.getLogger("fsm_worker.server.server")


def create_app(config: ServerConfig, registry: Registry | None = None) -> web.Application:
    """An aiohttp application serving Socket.IO and ``GET /healthz``."""
    app = web.Application()
    server = SignalingServer(config, registry)
    server.attach(app)
    app[SERVER_KEY] = server
    return app


SERVER_KEY = web.AppKey("signaling_server", SignalingServer)


@attrs.define
class RunningServer:
    """A started server; ``port`` is the bound port (useful with ``port=0``)."""

    app: web.Application
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        """Base URL for clients."""
        return f"http://{self.host}:{self.port}"

    @property
    def server(self) -> SignalingServer:
        """The handlers and registry."""
        return self.app[SERVER_KEY]

    async def stop(self) -> None:
        """Close every connection, release this node's peers and stop listening."""
        await self.runner.cleanup()


async def start_server(config: ServerConfig, registry: Registry | None = None) -> RunningServer:
    """Start listening on ``config.host:config.port`` (0 picks a free port)."""
    app = create_app(config, registry)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    port = int(runner.addresses[0][1])
    log_event(log, logging.INFO, "server_listening", host=config.host, port=port, node=config.node_id)
    return RunningServer(app=app, runner=runner, host=config.host, port=port)


async def run_server(
    config: ServerConfig,
    *,
    ready: Callable[[RunningServer], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (or ``stop`` is set), then shut down cleanly."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    running = await start_server(config)
    try:
        if ready is not None:
            ready(running)
        await stop.wait()
    finally:
        await running.stop()
        for sig in installed:
            loop.remove_signal_handler(sig)
