"""Signaling benchmark: peer_message round trip and routed throughput, ours vs a bare python-socketio relay.

Every server runs in its own process (so the clients do not share its event loop); one node, and two nodes
sharing a private redis-server. Our servers run with the per-connection token bucket raised (``BUCKET``): the
figures are the server's routing, not the bucket's rate. Run: ``.venv/bin/python benchmarks/run_all.py --only
signaling`` (or ``PYTHONPATH=.:tests .venv/bin/python benchmarks/signaling.py [--quick]``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import socketio
from bare_relay import start_bare_relay
from support.signaling import (
    ServerProcess,
    redis_server_binary,
    start_redis,
    start_server_process,
)

from fsm_worker.server.filters import Filters
from fsm_worker.server.redis_registry import RedisRegistry
from fsm_worker.server.registry import ClaimRequest, MemoryRegistry, Registry

#: Our servers' per-connection token bucket, raised for this benchmark: at the default (200 events/s, a burst
#: of 400) one connection's pipelined burst meets `RATE_LIMITED` (141 of 2,000 refused in a --quick run), and
#: the figure would be the bucket's, not the server's. The bucket itself is measured in benchmarks/flood.py.
BUCKET = {"rate_limit_events_per_second": 1_000_000, "rate_limit_burst": 1_000_000}
BUCKET_ARGS = [arg for key, value in BUCKET.items() for arg in (f"--{key.replace('_', '-')}", str(value))]

# -- measuring ------------------------------------------------------------------------------------------------


async def connect(
    url: str, token: str, peer_id: str, on_message: Callable[[Any], Any]
) -> socketio.AsyncClient:
    sio = socketio.AsyncClient(reconnection=False)
    sio.on("peer_message", on_message)
    auth = {"token": token, "peer_id": peer_id, "role": "client", "metadata": {}}
    await sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=10)
    return sio


async def measure(url_a: str, url_b: str, token: str, rtts: int, burst: int) -> dict[str, float]:
    """Round trips A→B→A (sequential) and a pipelined burst A→B."""
    ping_reply: asyncio.Queue[Any] = asyncio.Queue()
    received = 0
    done = asyncio.Event()
    b: socketio.AsyncClient | None = None
    tag = secrets.token_hex(3)

    async def on_b(data: Any) -> None:
        nonlocal received
        if data["payload"].get("echo"):
            assert b is not None
            await b.emit("peer_message", {"to_peer_id": f"a-{tag}", "payload": data["payload"]})
        else:
            received += 1
            if received == burst:
                done.set()

    a = await connect(url_a, token, f"a-{tag}", ping_reply.put_nowait)
    b = await connect(url_b, token, f"b-{tag}", on_b)
    try:
        samples = []
        for i in range(rtts + 20):
            start = time.perf_counter()
            await a.emit("peer_message", {"to_peer_id": f"b-{tag}", "payload": {"echo": True, "i": i}})
            async with asyncio.timeout(10):
                await ping_reply.get()
            if i >= 20:  # warm-up
                samples.append((time.perf_counter() - start) * 1000)
        window = asyncio.Semaphore(64)

        refused: list[Any] = []

        async def one(i: int) -> None:
            async with window:
                ack = await a.call(
                    "peer_message", {"to_peer_id": f"b-{tag}", "payload": {"i": i}}, timeout=30
                )
                if not (isinstance(ack, dict) and ack.get("ok")):
                    refused.append(ack)

        start = time.perf_counter()
        async with asyncio.timeout(60):
            await asyncio.gather(*(one(i) for i in range(burst)))
            if refused:  # a refused message never arrives: the figure would be meaningless
                raise RuntimeError(f"{len(refused)} of {burst} messages refused, e.g. {refused[0]}")
            await done.wait()
        elapsed = time.perf_counter() - start
        q = statistics.quantiles(samples, n=100)
        return {"p50": q[49], "p99": q[98], "rate": burst / elapsed}
    finally:
        await a.disconnect()
        await b.disconnect()


async def discovery_ms(registry: Registry, peers: int = 5000, rounds: int = 20) -> float:
    """Median time of one discovery (registry read + filter) over a room of ``peers`` workers."""
    await registry.start()
    try:
        for i in range(peers):
            md = {"tags": ["gpu"], "properties": {"status": "available", "gpu_memory_mb": 1024 * (i % 48)}}
            req = ClaimRequest("room", f"w{i}", f"sid{i}", "worker", md, None, "h")
            await registry.claim(req, time.time())
        wanted = Filters(role="worker", properties={"status": "available", "gpu_memory_mb": {"$gte": 8192}})
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            found = [v for v in await registry.peers("room") if wanted.matches(v.role, v.metadata)]
            samples.append((time.perf_counter() - start) * 1000)
        assert found
        return statistics.median(samples)
    finally:
        await registry.close()


@contextlib.asynccontextmanager
async def servers(kind: str, token: str, nodes: int, redis_url: str | None) -> AsyncIterator[list[str]]:
    procs: list[ServerProcess] = []
    try:
        for _ in range(nodes):
            if kind == "ours":
                procs.append(await start_server_process([token], redis_url=redis_url, extra_args=BUCKET_ARGS))
            else:
                procs.append(await start_bare_relay(redis_url))
        yield [p.url for p in procs]
    finally:
        for p in procs:
            await p.stop()


async def run(quick: bool) -> None:
    rtts, burst = (200, 2000) if quick else (1000, 10000)
    token = secrets.token_urlsafe(16)
    redis = await start_redis() if redis_server_binary() else None
    rows: list[tuple[str, dict[str, float], dict[str, float]]] = []
    spreads: list[tuple[str, dict[str, list[dict[str, float]]]]] = []
    try:
        setups: list[tuple[str, int, str | None]] = [("1 node", 1, None)]
        if redis is not None:
            setups.append(("2 nodes + redis", 2, redis.url))
        for label, nodes, redis_url in setups:
            runs: dict[str, list[dict[str, float]]] = {"bare": [], "ours": []}
            for kind in ("bare", "ours", "ours", "bare"):  # ABBA: a slow spell of the machine hits both alike
                async with servers(kind, token, nodes, redis_url) as urls:
                    runs[kind].append(await measure(urls[0], urls[-1], token, rtts, burst))
            result = {
                kind: {key: statistics.mean(r[key] for r in rs) for key in rs[0]} for kind, rs in runs.items()
            }
            rows.append((label, result["bare"], result["ours"]))
            spreads.append((label, runs))
        disc = {"memory": await discovery_ms(MemoryRegistry(grace=30))}
        if redis is not None:
            disc["redis"] = await discovery_ms(RedisRegistry(url=redis.url, node_id="bench", grace=30))
    finally:
        if redis is not None:
            redis.stop()
    print(
        f"\npeer_message through the server: {rtts} round trips (A→B→A), burst of {burst} A→B (64 in flight)"
    )
    print(
        "our servers: "
        + ", ".join(f"{key}={value}" for key, value in BUCKET.items())
        + " (defaults 200, 400: the burst would measure the bucket; see benchmarks/flood.py)"
    )
    header = f"{'setup':<17}{'metric':<14}{'bare relay':>12}{'fsm_worker':>12}{'ours/bare':>11}"
    print(header)
    print("-" * len(header))
    for label, bare, ours in rows:
        for key, name, unit in (
            ("p50", "RTT p50", "ms"),
            ("p99", "RTT p99", "ms"),
            ("rate", "routed", "msg/s"),
        ):
            fmt = "{:>10.0f}" if key == "rate" else "{:>10.2f}"
            print(
                f"{label:<17}{name + ' ' + unit:<14}{fmt.format(bare[key]):>12}{fmt.format(ours[key]):>12}"
                f"{ours[key] / bare[key]:>10.2f}x"
            )
    print("\neach figure: the mean of 2 runs in ABBA order (bare, ours, ours, bare); the runs:")
    for label, runs in spreads:
        for key in ("p50", "rate"):
            bare_runs = ", ".join(f"{r[key]:.2f}" for r in runs["bare"])
            ours_runs = ", ".join(f"{r[key]:.2f}" for r in runs["ours"])
            print(f"  {label:<17}{key:<6} bare {bare_runs:<20} ours {ours_runs}")
    print(
        "\ndiscovery over 5000 workers (registry read + filter, median): "
        + ", ".join(f"{k} {v:.1f} ms" for k, v in disc.items())
    )
    if redis is None:
        print("(redis-server not installed: two-node rows skipped)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    asyncio.run(run(args.quick))


if __name__ == "__main__":
    main()
