"""Server memory while one member asks for answers and never reads them (issue 10, item 6).

A signaling server process on loopback, ``--workers`` workers with ~7 KB of metadata each (one discovery
answer is then ~``workers`` x 7 KB), an observer client, and the slow reader: a raw WebSocket peer with a 4 KiB
receive buffer that sends ``--requests`` ``discover_peers`` (~30 bytes each) and never reads a byte. The
server's resident memory (``VmRSS`` from ``/proc``) is sampled every 50 ms from before the slow reader joins
(the idle baseline, same run) until ``--seconds`` after its last request; the peak is the larger of the
samples and the process's high-water mark (``VmHWM``, which also catches a peak between samples).

Two servers, ABBA when ``--rounds 2``:

- ``ours``: the default limits (``max_send_buffer_bytes``, ``max_send_buffer_messages``): the slow reader is
  dropped with ``event=connection_dropped reason=... limit=...`` and what it never read is freed;
- ``no cap``: both limits out of reach (the baseline: what one slow reader costs unbounded).

Printed per server: idle RSS, peak RSS and its growth over idle, RSS at the end, whether (and after how long)
the slow reader was dropped, and the observer's discovery round trip during the episode (the server stays
responsive). Run: ``.venv/bin/python benchmarks/slow_reader.py [--requests 400] [--workers 30] [--quick]``.
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

from support.configured_server import start_configured_server
from support.raw_ws import RawSocketIO
from support.signaling import ServerProcess, auth_for

from fsm_worker.server.config import ServerConfig
from fsm_worker.shells.signaling import SignalingClient

NO_CAP = {"max_send_buffer_bytes": 1 << 40, "max_send_buffer_messages": 1 << 30}
DEFAULT_CAP_MIB = ServerConfig(tokens=["x"]).max_send_buffer_bytes / (1 << 20)
SAMPLE_SECONDS = 0.05


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process (``VmHWM``: its peak so far; Linux ``/proc``; 0 elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def listed(observer: SignalingClient, peer_id: str) -> bool:
    return peer_id in [p["peer_id"] for p in await observer.discover({"role": "client"})]


async def episode(kind: str, server: ServerProcess, token: str, args: argparse.Namespace) -> dict[str, Any]:
    pid = server.process.pid
    fat = {"properties": {"status": "available", "blob": "x" * 7000}}
    workers = [SignalingClient(server.url, token, f"w{i:03d}", "worker", fat) for i in range(args.workers)]
    observer = SignalingClient(server.url, token, "observer")
    slow = None
    try:
        for client in [*workers, observer]:
            await client.connect()
        await asyncio.sleep(1.0)  # settle
        idle = statistics.median([rss_mib(pid) for _ in range(5)])
        slow = await RawSocketIO.open(server.url, rcvbuf=4096)
        await slow.join(auth_for(token, "slowpoke"))
        samples: list[float] = []
        rtts: list[float] = []
        sampling = True

        async def sample() -> None:
            while sampling:
                samples.append(rss_mib(pid))
                await asyncio.sleep(SAMPLE_SECONDS)

        sampler = asyncio.create_task(sample())
        started = time.perf_counter()
        for i in range(args.requests):
            await slow.send(f'42{i}["discover_peers",{{}}]')
        sent_at = time.perf_counter()
        dropped_after: float | None = None
        while time.perf_counter() - sent_at < args.seconds:
            t0 = time.perf_counter()
            still_there = await listed(observer, "slowpoke")
            rtts.append((time.perf_counter() - t0) * 1000)
            if not still_there and dropped_after is None:
                dropped_after = time.perf_counter() - started
            await asyncio.sleep(0.1)
        sampling = False
        await sampler
        peak = max(*samples, rss_mib(pid, "VmHWM"))  # the high-water mark catches a peak between samples
        return {
            "kind": kind, "idle": idle, "peak": peak, "end": samples[-1], "dropped_after": dropped_after,
            "rtt_p50": statistics.median(rtts), "rtt_max": max(rtts),
        }  # fmt: skip
    finally:
        if slow is not None:
            slow.close()
        for client in [observer, *workers]:
            await client.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400, help="discover_peers the slow reader sends")
    parser.add_argument("--workers", type=int, default=30, help="workers with ~7 KB metadata each")
    parser.add_argument("--seconds", type=float, default=6.0, help="how long to watch after the last request")
    parser.add_argument("--rounds", type=int, default=1, help="1: ours, no cap; 2: ABBA")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.seconds, args.rounds = 200, 4.0, 1
    order: list[tuple[str, dict[str, Any]]] = [("ours", {}), ("no cap", NO_CAP)]
    if args.rounds >= 2:
        order += order[::-1]
    results = []
    for kind, fields in order:
        token = secrets.token_hex(8)
        server = await start_configured_server([token], **fields)
        try:
            results.append(await episode(kind, server, token, args))
        finally:
            await server.stop()
    answer_kib = args.workers * 7.1
    print(
        f"\nserver RSS (MiB) while one connection sends {args.requests} discover_peers (~{answer_kib:.0f} KiB "
        f"answer each, {args.requests * answer_kib / 1024:.0f} MiB in all) and reads nothing; "
        f"default max_send_buffer_bytes = {DEFAULT_CAP_MIB:g} MiB"
    )
    print(f"{'server':<9}{'idle':>8}{'peak':>8}{'growth':>9}{'end':>8}{'dropped after':>15}"
          f"{'observer discover p50 / max ms':>32}")  # fmt: skip
    for r in results:
        dropped = "never" if r["dropped_after"] is None else f"{r['dropped_after']:.1f} s"
        print(f"{r['kind']:<9}{r['idle']:>8.1f}{r['peak']:>8.1f}{r['peak'] - r['idle']:>9.1f}{r['end']:>8.1f}"
              f"{dropped:>15}{r['rtt_p50']:>21.1f} / {r['rtt_max']:.1f}")  # fmt: skip
    ours = [r for r in results if r["kind"] == "ours"]
    bare = [r for r in results if r["kind"] == "no cap"]
    growth = max(r["peak"] - r["idle"] for r in ours)
    bare_growth = max(r["peak"] - r["idle"] for r in bare)
    bound = 2 * DEFAULT_CAP_MIB  # the queue cap, plus the answers being encoded and the allocator's slack
    met = growth <= bound and all(r["dropped_after"] is not None for r in ours)
    print(f"target: growth <= {bound:g} MiB and the slow reader dropped ({'met' if met else 'NOT met'})")
    print("SUMMARY " + json.dumps({
        "figure": "slow reader: server RSS growth over idle (MiB)", "ours": growth, "baseline": bare_growth,
        "unit": "MiB", "target": f"<= {bound:g} MiB, dropped", "met": met, "baseline_name": "no cap, same run",
    }))  # fmt: skip
    print("SUMMARY " + json.dumps({
        "figure": "slow reader: server idle RSS (MiB)", "ours": min(r["idle"] for r in ours),
        "baseline": None, "unit": "MiB", "target": "", "met": None, "baseline_name": "",
    }))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
