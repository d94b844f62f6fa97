"""A job_request flood against a worker's signaling link: the real client's round trip, ours vs the old outbox.

Everything runs in one process (server, worker, client, flooder share one event loop and CPU), so the figures
show the shape, not production latencies. One in-process signaling server on loopback; a worker link answers every message it gets; a flooder sends
FLOOD messages as fast as it can while the real client pings the worker PINGS times, one after another. The
worker replies either the way it does now (`post`: many acks in flight per peer, nothing waits) or the way it
did before (baseline: one outbox task awaiting each `send`'s ack in turn). Rounds interleave ABBA.

Run: ``.venv/bin/python benchmarks/link_flood.py [--flood 3000] [--pings 30] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.signaling import loopback_config

from fsm_worker.server.app import start_server
from fsm_worker.shells.signaling import SignalingClient


async def one_round(mode: str, flood: int, pings: int) -> dict[str, float]:
    token = secrets.token_hex(8)
    server = await start_server(loopback_config([token]))
    outbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    pongs: asyncio.Queue[float] = asyncio.Queue()
    flood_replies = 0

    def reply(to: str, payload: dict[str, Any]) -> None:
        if mode == "ours":
            worker.post(to, payload)
        else:
            outbox.put_nowait((to, payload))

    async def serial_outbox() -> None:  # the old host: one sender awaiting every ack
        while True:
            to, payload = await outbox.get()
            await worker.send(to, payload)

    def on_worker(sender: str, payload: dict[str, Any]) -> None:
        kind = "pong" if payload.get("type") == "ping" else "busy"
        reply(sender, {"type": kind, "sent": payload.get("sent")})

    def on_client(_sender: str, payload: dict[str, Any]) -> None:
        if payload.get("type") == "pong":
            pongs.put_nowait(time.perf_counter() - float(payload["sent"]))

    def on_flooder(_sender: str, _payload: dict[str, Any]) -> None:
        nonlocal flood_replies
        flood_replies += 1

    worker = SignalingClient(server.url, token, "w1", "worker", on_peer_message=on_worker, ack_timeout=120)
    client = SignalingClient(server.url, token, "c1", on_peer_message=on_client)
    flooder = SignalingClient(
        server.url, token, "mallory", on_peer_message=on_flooder, max_queued_per_peer=10**6
    )
    sender = asyncio.create_task(serial_outbox())
    try:
        for link in (worker, client, flooder):
            await link.connect(timeout=10)
        idle = [await ping(client, pongs) for _ in range(5)]
        for i in range(flood):
            flooder.post("w1", {"type": "job_request", "i": i})
        during = [await ping(client, pongs) for _ in range(pings)]
    finally:
        sender.cancel()
        for link in (worker, client, flooder):
            await link.close()
        await server.stop()
    return {
        "idle_median_ms": statistics.median(idle) * 1000,
        "flood_median_ms": statistics.median(during) * 1000,
        "flood_mean_ms": statistics.fmean(during) * 1000,
        "flood_p99_ms": max(during) * 1000
        if len(during) < 100
        else statistics.quantiles(during, n=100)[98] * 1000,
    }


async def ping(client: SignalingClient, pongs: asyncio.Queue[float]) -> float:
    client.post("w1", {"type": "ping", "sent": time.perf_counter()})
    return await asyncio.wait_for(pongs.get(), 300)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flood", type=int, default=3000)
    parser.add_argument("--pings", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"ours": [], "baseline": []}
    for _ in range(args.rounds):
        for mode in ("ours", "baseline", "baseline", "ours"):  # ABBA
            results[mode].append(await one_round(mode, args.flood, args.pings))
    print(f"{'figure':<18} {'ours':>10} {'baseline':>10} {'ratio':>8}")
    summary = {}
    for key in ("idle_median_ms", "flood_median_ms", "flood_mean_ms", "flood_p99_ms"):
        ours = statistics.median(r[key] for r in results["ours"])
        base = statistics.median(r[key] for r in results["baseline"])
        summary[key] = {"ours": ours, "baseline": base, "ratio": ours / base}
        print(f"{key:<18} {ours:>10.2f} {base:>10.2f} {ours / base:>8.3f}")
    print("SUMMARY " + json.dumps({"link_flood": summary}))


if __name__ == "__main__":
    asyncio.run(main())
