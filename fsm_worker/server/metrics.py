"""The signaling server's Prometheus metrics (``prometheus-client``), served at ``GET /metrics``.

The handlers are wrapped, not edited: `metered_connect` counts accepted and refused connections (by code),
`metered_event` counts every event's outcome and times discovery. Peers by role and open connections are
read from the server's own tables at scrape time. No series carries a room, token or peer id. Every series:
docs/metrics.md.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

import socketio
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

#: The refusal code of a rate-limited connection or event (the server's token bucket).
RATE_LIMITED = "RATE_LIMITED"
ROLES = ("worker", "client")
DISCOVERY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, float("inf"))

R = TypeVar("R")


class _LiveCollector(Collector):
    def __init__(self, roles: Callable[[], Iterable[str]], connections: Callable[[], int]) -> None:
        self.roles = roles
        self.connections = connections

    def collect(self) -> Iterator[Metric]:
        connections = GaugeMetricFamily(
            "fsm_server_connections", "Open Engine.IO connections to this node (peers and handshakes)."
        )
        connections.add_metric([], self.connections())
        yield connections
        tally = Tally(self.roles())
        peers = GaugeMetricFamily(
            "fsm_server_peers", "Peers connected to this node, by role.", labels=["role"]
        )
        for role in ROLES:
            peers.add_metric([role], tally.get(role, 0))
        yield peers


class ServerMetrics:
    """Prometheus series of one server node, in a registry of its own."""

    def __init__(self, roles: Callable[[], Iterable[str]], connections: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_LiveCollector(roles, connections))
        self.connects = Counter(
            "fsm_server_connects", "Connections accepted (a peer id claimed).", registry=self.registry
        )
        self.refusals = Counter(
            "fsm_server_refusals",
            "Refused connections and events, by error code and where (connect or the event's name).",
            ["code", "where"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "fsm_server_rate_limited",
            "Connections and events refused with RATE_LIMITED.",
            registry=self.registry,
        )
        self.events = Counter(
            "fsm_server_events",
            "Events handled, by name and ok/refused.",
            ["event", "ok"],
            registry=self.registry,
        )
        self.routed = Counter(
            "fsm_server_messages_routed",
            "peer_message events routed to their target.",
            registry=self.registry,
        )
        self.discovery = Histogram(
            "fsm_server_discovery_seconds",
            "Time to answer discover_peers (registry lookup and filtering).",
            buckets=DISCOVERY_BUCKETS,
            registry=self.registry,
        )

    def _refused(self, code: str, where: str) -> None:
        self.refusals.labels(code, where).inc()
        if code == RATE_LIMITED:
            self.rate_limited.inc()

    def metered_connect(self, handler: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
        """Wrap the connect handler: count accepted connections and refusals by code."""

        async def connect(sid: str, *args: Any) -> R:
            try:
                result = await handler(sid, *args)
            except socketio.exceptions.ConnectionRefusedError as refusal:
                data = refusal.error_args.get("data") if isinstance(refusal.error_args, dict) else None
                code = data.get("code") if isinstance(data, dict) else None
                self._refused(str(code or "REFUSED"), "connect")
                raise
            if result is True:
                self.connects.inc()
            return result

        return connect

    def metered_event(
        self, name: str, handler: Callable[..., Awaitable[dict[str, Any]]]
    ) -> Callable[..., Awaitable[dict[str, Any]]]:
        """Wrap an event handler: count its acks (refusals by code) and time discovery."""

        async def event(sid: str, *args: Any) -> dict[str, Any]:
            started = time.perf_counter()
            ack = await handler(sid, *args)
            ok = bool(ack.get("ok")) if isinstance(ack, dict) else False
            self.events.labels(name, "true" if ok else "false").inc()
            if ok and name == "peer_message":
                self.routed.inc()
            elif not ok:
                self._refused(str(ack.get("code", "UNKNOWN")), name)
            if ok and name == "discover_peers":
                self.discovery.observe(time.perf_counter() - started)
            return ack

        return event

    def render(self) -> bytes:
        """The Prometheus text exposition of every series."""
        return generate_latest(self.registry)

    async def handle(self, _request: web.Request) -> web.Response:
        """``GET /metrics``."""
        return web.Response(body=self.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
