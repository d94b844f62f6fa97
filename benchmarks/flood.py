"""A bystander's round trip while another connection floods a worker with ``job_request`` (issue 10, item 5).

Three processes besides this one, all on loopback: a signaling server, an echo worker (answers ``ping`` with
``pong`` and every ``job_request`` with a ``busy`` ``job_response`` through ``post``, as a busy worker does;
``FLOOD_SILENT_WORKER=1`` makes it count them only), and a flooder (one raw
Socket.IO connection that sends ``job_request`` to the worker as fast as the server acks, 64 in flight).
This process is the bystander client: ping → pong round trips through the server, **paced** (one every
``--interval`` ms, default 25): a bystander is a member that stays within the rate limit itself. (Unpaced,
the bystander sends ~1000 pings/s and meets its own bucket: its refused pings are resent 0.25 s later, and
those show up as p99 outliers that have nothing to do with the flood.)

Phases alternate idle / flood / flood / idle (ABBA) in one run, for three servers:

- ``ours``: the server with its default limits (token bucket per connection; after a refusal the connection is
  not read again until ``rate_limit_hold_seconds`` of its rate is back);
- ``1-token hold``: the same bucket, but read again as soon as one token is back (the earlier behaviour: one
  refusal per admitted event);
- ``no bucket``: the bucket set out of reach (the baseline: what the flood does unbounded).

Printed per server: p50 / p99 of idle and flood round trips, flood p99 / idle p99 (target <= 2x), and where
the CPU goes: each process's CPU share (utime + stime from ``/proc``, % of one core) in idle and flood phases.
Run: ``.venv/bin/python benchmarks/flood.py [--samples 120] [--rounds 2] [--interval 25] [--quick]``
(``--ours '{"rate_limit_events_per_second": 50}'`` tries other limits for ``ours``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import socketio
from support.configured_server import start_configured_server
from support.signaling import Inbox, ServerProcess

from fsm_worker.shells.signaling import SignalingClient

TARGET_RATIO = 2.0
PING_TIMEOUT = 10.0
IN_FLIGHT = 64
REPLY = os.environ.get("FLOOD_SILENT_WORKER") != "1"
NO_BUCKET = {"rate_limit_events_per_second": 1e9, "rate_limit_burst": 10**9}
ONE_TOKEN_HOLD = {"rate_limit_hold_seconds": 1e-9}


async def run_worker(url: str, token: str) -> None:
    """Echo worker: pong to every ping; job_requests are only counted."""
    counts = {"job_request": 0}
    client: SignalingClient | None = None

    async def on_message(sender: str, payload: dict[str, Any]) -> None:
        if payload.get("type") == "ping" and client is not None:
            await client.send(sender, {"type": "pong", "seq": payload.get("seq")})
        else:
            counts["job_request"] += 1
            if REPLY and client is not None:  # what a busy worker answers
                client.post(sender, {"type": "job_response", "accepted": False, "reason": "busy"})

    client = SignalingClient(
        url, token, "w1", "worker", {"properties": {"status": "busy"}}, on_peer_message=on_message
    )
    await client.connect()
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print(json.dumps(counts), flush=True)
    await client.close()


async def run_flooder(url: str, token: str) -> None:
    """``start`` on stdin: flood until ``stop``; then print how many were sent and refused."""
    sio = socketio.AsyncClient(reconnection=False)
    auth = {"token": token, "peer_id": "flooder", "role": "client", "metadata": {}}
    await sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=10)
    loop = asyncio.get_running_loop()
    print("READY", flush=True)
    stats = {"sent": 0, "refused": 0}
    request = {"to_peer_id": "w1", "payload": {"type": "job_request", "job_id": "j", "job_type": "x"}}

    async def one() -> None:
        ack = await sio.call("peer_message", request, timeout=30)
        stats["sent"] += 1
        if not (isinstance(ack, dict) and ack.get("ok")):
            stats["refused"] += 1

    while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "start":
        stop = loop.run_in_executor(None, sys.stdin.readline)
        running: set[asyncio.Task[None]] = set()
        while not stop.done():
            while len(running) < IN_FLIGHT:
                task = asyncio.create_task(one())
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(*running, return_exceptions=True)
        print(json.dumps(stats), flush=True)
        stats = {"sent": 0, "refused": 0}
    await sio.disconnect()


async def spawn(role: str, url: str, token: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        role,
        url,
        token,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if line.strip() != b"READY":
        raise RuntimeError(f"{role} did not start: {line!r}")
    return proc


async def tell(proc: asyncio.subprocess.Process, line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line.encode() + b"\n")
    await proc.stdin.drain()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def round_trips(client: SignalingClient, inbox: Inbox, samples: int, interval: float) -> list[float]:
    """``samples`` ping → pong round trips (ms), one started every ``interval`` seconds at most."""
    out = []
    for seq in range(samples):
        start = time.perf_counter()
        await client.send("w1", {"type": "ping", "seq": seq})
        try:
            while True:
                _sender, payload = await inbox.next(timeout=PING_TIMEOUT)
                if payload.get("seq") == seq:
                    break
        except TimeoutError:
            pass
        out.append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(max(0.0, interval - (time.perf_counter() - start)))
    return out


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class CpuMeter:
    """CPU share (% of one core) of named processes, summed over the phases of one kind."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.cpu: dict[str, dict[str, float]] = {}
        self.wall: dict[str, float] = {}

    def start(self) -> tuple[float, dict[str, float]]:
        return time.perf_counter(), {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self, phase: str, started: tuple[float, dict[str, float]]) -> None:
        t0, c0 = started
        self.wall[phase] = self.wall.get(phase, 0.0) + time.perf_counter() - t0
        used = self.cpu.setdefault(phase, {})
        for name, pid in self.pids.items():
            used[name] = used.get(name, 0.0) + cpu_seconds(pid) - c0[name]

    def share(self, phase: str) -> dict[str, float]:
        wall = self.wall.get(phase) or 1.0
        return {name: 100 * used / wall for name, used in self.cpu.get(phase, {}).items()}


async def measure(
    kind: str, server: ServerProcess, token: str, samples: int, rounds: int, interval: float
) -> dict[str, Any]:
    worker = await spawn("worker", server.url, token)
    flooder = await spawn("flooder", server.url, token)
    inbox = Inbox()
    client = SignalingClient(server.url, token, "bystander", on_peer_message=inbox)
    await client.connect()
    meter = CpuMeter(
        {"server": server.process.pid, "worker": worker.pid, "flooder": flooder.pid, "bystander": os.getpid()}
    )
    rtts: dict[str, list[float]] = {"idle": [], "flood": []}
    sent = refused = 0
    try:
        await round_trips(client, inbox, 20, interval)  # warm-up
        for _ in range(rounds):
            for phase in ("idle", "flood", "flood", "idle"):  # ABBA
                if phase == "flood":
                    await tell(flooder, "start")
                    await asyncio.sleep(0.5)  # let the flood build up
                started = meter.start()
                rtts[phase] += await round_trips(client, inbox, samples, interval)
                meter.stop(phase, started)
                if phase == "flood":
                    await tell(flooder, "stop")
                    assert flooder.stdout is not None
                    stats = json.loads(await asyncio.wait_for(flooder.stdout.readline(), 120))
                    sent, refused = sent + stats["sent"], refused + stats["refused"]
                    await round_trips(client, inbox, 10, interval)  # drain what the flood left behind
    finally:
        await client.close()
        await tell(flooder, "quit")
        await tell(worker, "quit")
        for proc in (flooder, worker):
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
    return {
        "kind": kind, "idle": rtts["idle"], "flood": rtts["flood"], "sent": sent, "refused": refused,
        "cpu_idle": meter.share("idle"), "cpu_flood": meter.share("flood"),
    }  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=120, help="round trips per phase")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA repetitions")
    parser.add_argument("--interval", type=float, default=25.0, help="ms between the bystander's pings")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ours", default="{}", help="ServerConfig fields (JSON) for the 'ours' server")
    args = parser.parse_args()
    samples, rounds = (60, 1) if args.quick else (args.samples, args.rounds)
    interval = args.interval / 1000
    results = []
    ours_fields = json.loads(args.ours)
    for kind, fields in (
        ("ours", ours_fields),
        ("1-token hold", {**ours_fields, **ONE_TOKEN_HOLD}),
        ("no bucket", NO_BUCKET),
    ):
        token = secrets.token_hex(8)
        server = await start_configured_server([token], **fields)
        try:
            results.append(await measure(kind, server, token, samples, rounds, interval))
        finally:
            await server.stop()
    print(
        f"\nbystander ping→pong round trip (ms) through one server, one ping per {args.interval:g} ms, "
        f"{samples} per phase x {2 * rounds} phases each"
    )
    print(f"{'server':<12}{'idle p50':>10}{'idle p99':>10}{'flood p50':>11}{'flood p99':>11}"
          f"{'p99 ratio':>11}{'flood sent':>12}{'refused':>10}")  # fmt: skip
    for r in results:
        ratio = p(r["flood"], 0.99) / p(r["idle"], 0.99)
        print(f"{r['kind']:<12}{p(r['idle'], 0.5):>10.2f}{p(r['idle'], 0.99):>10.2f}{p(r['flood'], 0.5):>11.2f}"
              f"{p(r['flood'], 0.99):>11.2f}{ratio:>10.2f}x{r['sent']:>12}{r['refused']:>10}")  # fmt: skip
    print("\nwhere the CPU goes (% of one core, idle → flood phases)")
    names = list(results[0]["cpu_idle"])
    print(f"{'server':<12}" + "".join(f"{name:>18}" for name in names))
    for r in results:
        cells = "".join(f"{r['cpu_idle'][n]:>8.0f} → {r['cpu_flood'][n]:>5.0f}  " for n in names)
        print(f"{r['kind']:<12}{cells}")
    ours, one_token, bare = results
    ratio = p(ours["flood"], 0.99) / p(ours["idle"], 0.99)
    print(
        f"target: flood p99 <= {TARGET_RATIO:g}x idle p99 ({'met' if ratio <= TARGET_RATIO else 'NOT met'})"
    )
    print("SUMMARY " + json.dumps({
        "figure": "flood: bystander RTT p99 in a job_request flood vs idle", "ours": p(ours["flood"], 0.99),
        "baseline": p(ours["idle"], 0.99), "unit": "ms", "target": f"<= {TARGET_RATIO:g}x idle",
        "met": ratio <= TARGET_RATIO, "baseline_name": "idle p99, same run",
    }))  # fmt: skip
    print("SUMMARY " + json.dumps({
        "figure": "flood: RTT p99 flood vs idle, no bucket", "ours": p(bare["flood"], 0.99),
        "baseline": p(bare["idle"], 0.99), "unit": "ms", "target": "", "met": None,
        "baseline_name": "idle p99, same run",
    }))  # fmt: skip
    print("SUMMARY " + json.dumps({
        "figure": "flood: RTT p99 flood vs idle, 1-token hold",
        "ours": p(one_token["flood"], 0.99), "baseline": p(one_token["idle"], 0.99), "unit": "ms", "target": "",
        "met": None, "baseline_name": "idle p99, same run",
    }))  # fmt: skip
    for r in (one_token, bare):
        print("SUMMARY " + json.dumps({
            "figure": f"flood: server CPU in the flood, ours vs {r['kind']}", "ours": ours["cpu_flood"]["server"],
            "baseline": r["cpu_flood"]["server"], "unit": "%", "target": "", "met": None,
            "baseline_name": f"{r['kind']}, same run",
        }))  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] in ("worker", "flooder"):
        role, url, token = sys.argv[1:4]
        asyncio.run(run_worker(url, token) if role == "worker" else run_flooder(url, token))
    else:
        asyncio.run(main())
