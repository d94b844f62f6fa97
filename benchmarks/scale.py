"""Scale: N simulated workers on ONE signaling server process, ours vs a bare python-socketio relay.

A few holder processes keep many Socket.IO connections each (raw ``socketio.AsyncClient``, role ``worker``,
realistic metadata with ``status: available``). Measured for both servers in the same run:

- server memory per connection: RSS of the server process (``/proc/PID/status``) after N connects minus
  before, divided by N;
- discovery: ``discover_peers`` (role worker, status available) from a client in this process, p50/p99;
- broadcast: a client sends ``job_request`` to 100 workers (acked ``peer_message``) and waits for all 100
  ``job_response`` replies (the simulated workers answer ``accepted=false, reason=busy``), p50/p99.

The bare relay has no auth, identity, validation or registry: it keeps ``sid -> (peer_id, role, metadata)``,
routes ``peer_message`` to a room named after the peer id and answers ``discover_peers`` with its whole table
(no filtering). Run: ``.venv/bin/python benchmarks/scale.py [--workers 5000] [--procs 4]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import socketio
from bare_relay import start_bare_relay
from support.signaling import start_server_process

from fsm_worker.protocol.messages import JobRequest, JobResponse, to_wire

TARGET_KB_PER_CONNECTION = 20.0
TARGET_DISCOVERY_MS = 100.0
DISCOVER_FILTER = {"filters": {"role": "worker", "properties": {"status": "available"}}}
TIMEOUT = 120.0


def raise_nofile() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit (children inherit it)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def worker_metadata(index: int) -> dict[str, Any]:
    """What a real WorkerHost advertises (capabilities + status), varied per worker."""
    return {
        "tags": ["gpu", f"rack-{index % 16}"],
        "properties": {
            "status": "available",
            "gpu_memory_mb": 8192 * (1 + index % 4),
            "gpu_model": "NVIDIA GeForce RTX 4090",
            "cuda_version": "12.4",
            "supported_job_types": ["train-demo"],
            "hostname": f"sim-host-{index:05d}",
            "max_concurrent_jobs": 1,
        },
    }


# -- the baseline server ----------------------------------------------------------------------------------------


async def start_child(*args: str) -> asyncio.subprocess.Process:
    """This script in a child process with piped stdin/stdout."""
    return await asyncio.create_subprocess_exec(
        sys.executable, os.path.abspath(__file__), *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip


# -- holder processes: many simulated workers each ----------------------------------------------------------------


def simulated_worker(session: aiohttp.ClientSession) -> socketio.AsyncClient:
    """A raw client that answers every ``job_request`` with ``job_response accepted=false, reason=busy``."""
    sio = socketio.AsyncClient(reconnection=False, http_session=session, handle_sigint=False)

    async def on_message(data: Any) -> None:
        payload = data.get("payload") or {}
        if payload.get("app_message_type") == "job_request":
            reply = JobResponse(payload["job_id"], False, reason="busy", details=("simulated worker",))
            await sio.emit("peer_message", {"to_peer_id": data["from_peer_id"], "payload": to_wire(reply)})

    sio.on("peer_message", on_message)
    return sio


async def hold() -> None:
    """Serve JSON-line commands on stdin: connect a range of workers, disconnect them, quit."""
    raise_nofile()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    clients: list[socketio.AsyncClient] = []
    window = asyncio.Semaphore(32)

    async def connect_one(url: str, token: str, index: int) -> None:
        sio = simulated_worker(session)
        auth = {
            "token": token,
            "peer_id": f"w{index:05d}",
            "role": "worker",
            "metadata": worker_metadata(index),
        }
        async with window:
            await sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=60)
        clients.append(sio)

    while line := await asyncio.to_thread(sys.stdin.readline):
        cmd = json.loads(line)
        start = time.perf_counter()
        if cmd["op"] == "connect":
            await asyncio.gather(*(connect_one(cmd["url"], cmd["token"], i) for i in cmd["ids"]))
        elif cmd["op"] == "disconnect":
            await asyncio.gather(*(sio.disconnect() for sio in clients))
            clients.clear()
        else:
            break
        print(
            json.dumps({"ok": True, "clients": len(clients), "seconds": time.perf_counter() - start}),
            flush=True,
        )
    await session.close()


class Holders:
    """The holder processes, driven over their stdin/stdout."""

    def __init__(self, procs: list[asyncio.subprocess.Process]) -> None:
        self.procs = procs

    @classmethod
    async def start(cls, count: int) -> Holders:
        return cls([await start_child("--hold") for _ in range(count)])

    async def command(self, cmds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        async def one(proc: asyncio.subprocess.Process, cmd: dict[str, Any]) -> dict[str, Any]:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write((json.dumps(cmd) + "\n").encode())
            await proc.stdin.drain()
            line = await proc.stdout.readline()
            if not line:
                raise RuntimeError(f"holder exited (rc={await proc.wait()})")
            reply: dict[str, Any] = json.loads(line)
            return reply

        async with asyncio.timeout(TIMEOUT):
            return list(await asyncio.gather(*(one(p, c) for p, c in zip(self.procs, cmds, strict=True))))

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


# -- measuring ---------------------------------------------------------------------------------------------------


def quantiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) of a list of samples."""
    if len(samples) < 2:
        return samples[0], samples[0]
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return q[49], q[98]


async def client_for(url: str, token: str, on_message: Callable[[Any], None]) -> socketio.AsyncClient:
    """The requesting client (large websocket messages allowed: discovery answers are MBs)."""
    sio = socketio.AsyncClient(reconnection=False, websocket_extra_options={"max_msg_size": 0})
    sio.on("peer_message", on_message)
    auth = {"token": token, "peer_id": f"client-{secrets.token_hex(3)}", "role": "client", "metadata": {}}
    await sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=20)
    return sio


async def discovery(sio: socketio.AsyncClient, expected: int, rounds: int) -> tuple[float, float, int]:
    """p50/p99 ms of one ``discover_peers`` answered with every worker, and the answer's size in bytes."""
    samples, size = [], 0
    for i in range(rounds + 2):
        start = time.perf_counter()
        ack = await sio.call("discover_peers", DISCOVER_FILTER, timeout=TIMEOUT)
        elapsed = (time.perf_counter() - start) * 1000
        found = len(ack["peers"])
        if found != expected:
            raise RuntimeError(f"discovery returned {found} workers, expected {expected}")
        if i >= 2:  # warm-up
            samples.append(elapsed)
        size = len(json.dumps(ack))
    p50, p99 = quantiles(samples)
    return p50, p99, size


async def broadcast(
    sio: socketio.AsyncClient, replies: asyncio.Queue[str], targets: list[str], rounds: int
) -> tuple[float, float]:
    """p50/p99 ms from sending ``job_request`` to every target until every ``job_response`` is back."""
    samples = []
    for r in range(rounds + 2):
        job_id = f"job-{r}-{secrets.token_hex(4)}"
        request = to_wire(JobRequest(job_id, "train-demo", {"epochs": 1}))
        start = time.perf_counter()
        acks = await asyncio.gather(
            *(
                sio.call("peer_message", {"to_peer_id": t, "payload": request}, timeout=TIMEOUT)
                for t in targets
            )
        )
        if not all(ack.get("ok") for ack in acks):
            raise RuntimeError(f"peer_message refused: {next(a for a in acks if not a.get('ok'))}")
        pending = set(targets)
        async with asyncio.timeout(TIMEOUT):
            while pending:
                pending.discard(await replies.get())
        if r >= 2:
            samples.append((time.perf_counter() - start) * 1000)
    return quantiles(samples)


async def measure(kind: str, holders: Holders, workers: int, rounds: int, fanout: int) -> dict[str, float]:
    """One server (ours or bare) under ``workers`` connections."""
    token = secrets.token_hex(16)  # hex: a token starting with "-" breaks argparse
    server = await (
        start_server_process([token], log_level="WARNING") if kind == "ours" else start_bare_relay()
    )
    pid = server.process.pid
    try:
        await asyncio.sleep(0.5)
        before = rss_kib(pid)
        ids = list(range(workers))
        shares = [ids[i :: len(holders.procs)] for i in range(len(holders.procs))]
        start = time.perf_counter()
        await holders.command(
            [{"op": "connect", "url": server.url, "token": token, "ids": s} for s in shares]
        )
        connect_s = time.perf_counter() - start
        await asyncio.sleep(1.0)
        after = rss_kib(pid)
        replies: asyncio.Queue[str] = asyncio.Queue()

        def on_message(data: Any) -> None:
            if (data.get("payload") or {}).get("app_message_type") == "job_response":
                replies.put_nowait(data["from_peer_id"])

        sio = await client_for(server.url, token, on_message)
        try:
            disc_p50, disc_p99, size = await discovery(sio, workers, rounds)
            step = max(1, workers // fanout)
            targets = [f"w{i:05d}" for i in range(0, workers, step)][:fanout]
            bc_p50, bc_p99 = await broadcast(sio, replies, targets, rounds)
        finally:
            await sio.disconnect()
        peak = rss_kib(pid)
        await holders.command([{"op": "disconnect"}] * len(holders.procs))
    finally:
        await server.stop()
    return {
        "kb_per_conn": (after - before) * 1.024 / workers,  # KiB → kB (1000 bytes)
        "rss_before_mib": before / 1024,
        "rss_after_mib": after / 1024,
        "rss_peak_mib": peak / 1024,
        "connect_s": connect_s,
        "disc_p50": disc_p50,
        "disc_p99": disc_p99,
        "disc_bytes": size,
        "bc_p50": bc_p50,
        "bc_p99": bc_p99,
        "fanout": len(targets),
    }


def report(workers: int, bare: dict[str, float], ours: dict[str, float]) -> None:
    """The table and one ``SUMMARY`` JSON line per headline figure (read by run_all.py)."""
    print(f"\nscale: {workers} simulated workers on one server process "
          f"(discovery answer {ours['disc_bytes'] / 1e6:.2f} MB, broadcast to {ours['fanout']:.0f} workers)")  # fmt: skip
    header = f"{'metric':<34}{'bare relay':>12}{'fsm_worker':>12}{'ours/bare':>11}{'target':>11}{'met':>6}"
    print(header)
    print("-" * len(header))
    rows = [
        ("memory per connection (kB)", "kb_per_conn", TARGET_KB_PER_CONNECTION),
        ("server RSS before (MiB)", "rss_before_mib", None),
        ("server RSS with N peers (MiB)", "rss_after_mib", None),
        ("connect all N (s, from 4 procs)", "connect_s", None),
        ("discover all N p50 (ms)", "disc_p50", TARGET_DISCOVERY_MS),
        ("discover all N p99 (ms)", "disc_p99", None),
        ("broadcast → all replies p50 (ms)", "bc_p50", None),
        ("broadcast → all replies p99 (ms)", "bc_p99", None),
    ]
    for label, key, target in rows:
        ratio = ours[key] / bare[key] if bare[key] else float("nan")
        met = "" if target is None else ("yes" if ours[key] < target else "NO")
        tgt = "" if target is None else f"< {target:g}"
        print(f"{label:<34}{bare[key]:>12.2f}{ours[key]:>12.2f}{ratio:>10.2f}x{tgt:>11}{met:>6}")
    summary: list[tuple[str, str, str, float | None]] = [
        (f"scale: memory per connection (N={workers})", "kb_per_conn", "kB", TARGET_KB_PER_CONNECTION),
        (f"scale: discover {workers} workers p50", "disc_p50", "ms", TARGET_DISCOVERY_MS),
        (f"scale: job_request to {ours['fanout']:.0f} -> all replies p50", "bc_p50", "ms", None),
    ]
    for figure, key, unit, limit in summary:
        line = {"figure": figure, "ours": ours[key], "baseline": bare[key], "unit": unit,
                "target": "" if limit is None else f"< {limit:g}",
                "met": None if limit is None else ours[key] < limit,
                "baseline_name": "bare python-socketio relay"}  # fmt: skip
        print("SUMMARY " + json.dumps(line))


async def run(workers: int, procs: int, rounds: int, fanout: int) -> None:
    raise_nofile()
    holders = await Holders.start(procs)
    try:
        runs: dict[str, list[dict[str, float]]] = {"bare": [], "ours": []}
        for kind in ("bare", "ours", "ours", "bare"):  # ABBA: a slow spell of the machine hits both alike
            runs[kind].append(await measure(kind, holders, workers, rounds, fanout))
    finally:
        await holders.stop()
    bare, ours = (
        {key: sum(r[key] for r in rs) / len(rs) for key in rs[0]} for rs in (runs["bare"], runs["ours"])
    )
    for key in ("kb_per_conn", "disc_p50", "bc_p50"):
        print(f"ABBA runs {key}: bare " + ", ".join(f"{r[key]:.1f}" for r in runs["bare"])
              + "; ours " + ", ".join(f"{r[key]:.1f}" for r in runs["ours"]))  # fmt: skip
    report(workers, bare, ours)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=5000, help="simulated workers (connections)")
    parser.add_argument("--procs", type=int, default=4, help="holder processes")
    parser.add_argument("--rounds", type=int, default=10, help="samples per latency figure")
    parser.add_argument("--fanout", type=int, default=100, help="workers a job_request is broadcast to")
    parser.add_argument("--hold", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hold:
        asyncio.run(hold())
    else:
        asyncio.run(run(args.workers, args.procs, args.rounds, min(args.fanout, args.workers)))


if __name__ == "__main__":
    main()
