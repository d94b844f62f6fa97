"""End to end: job_request → open data channel, and the protocol overhead of a tiny job, ours vs a bare pipeline.

Ours: a signaling server process, a ``WorkerHost`` process and a ``JobClient`` here (loopback ICE, default
settings: the path-aware packet size, as in ``fsm-worker demo``). Bare and ours run in ABBA blocks. Each job is a tiny ``train-demo`` (200-row CSV,
2 epochs). Figures per job:

- to channel: ``submit()`` start → data channel open (discover + job_request/response + assignment + rtc
  offer/answer + ICE/DTLS/SCTP + channel open), from the client's phase timings;
- overhead: wall time ``submit()`` → ``result()`` (results downloaded) minus the run time the worker reports
  (the job process's wall time, spawn to exit).

Baseline, same run: a bare python-socketio relay process (no auth/registry/validation) and a bare worker process
(no state machine, no transfer protocol): job_request → job_response, then a raw aiortc offer/answer over the
relay, the CSV as one message, the same ``train_demo`` command spawned directly, the result files sent back.
Run: ``.venv/bin/python benchmarks/end_to_end.py [--jobs 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import socketio
from aiortc import RTCDataChannel, RTCPeerConnection
from bare_relay import start_bare_relay
from support.signaling import ServerProcess, start_server_process

from fsm_worker.client import JobClient
from fsm_worker.jobs.sample_data import generate_sample_csv
from fsm_worker.shells.rtc import (
    IncomingChannel,
    accept_answer,
    create_answer,
    create_offer,
    enable_loopback_candidates,
    make_configuration,
    wait_channel_open,
)
from fsm_worker.worker import WorkerConfig, WorkerHost

TARGET_CHANNEL_MS = 150.0
CONFIG = {"epochs": 2, "learning_rate": 0.1}
TIMEOUT = 60.0
CHUNK = 16 * 1024


def train_argv(source: Path, out_dir: Path) -> list[str]:
    """The command the train-demo handler builds for CONFIG (the bare worker runs it directly)."""
    return [sys.executable, "-u", "-m", "fsm_worker.jobs.train_demo", f"--input={source}",
            f"--output-dir={out_dir}", "--epochs=2", "--learning-rate=0.1"]  # fmt: skip


async def start_child(*args: str) -> asyncio.subprocess.Process:
    """A child process of this script; waits for its ``READY`` / ``LISTENING`` line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, os.path.abspath(__file__), *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    return proc


async def first_line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        line = (await proc.stdout.readline()).decode().strip()
    if not line:
        raise RuntimeError(f"child exited early (rc={await proc.wait()})")
    return line


async def stop_child(proc: asyncio.subprocess.Process) -> None:
    """Close its stdin (the signal to finish), then wait; kill if it hangs."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        async with asyncio.timeout(20):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


# -- child processes ------------------------------------------------------------------------------------------


async def serve_worker(url: str, token: str, workdir: str) -> None:
    """A real WorkerHost until stdin closes."""
    config = WorkerConfig(url, token, "bench-worker", workdir=Path(workdir), loopback_only=True)
    host = WorkerHost(config)
    await host.start()
    print("READY", flush=True)
    await asyncio.to_thread(sys.stdin.read)
    await host.shutdown()


class BareWorker:
    """Answers job_request, offers, and runs the job for the one client: the bare minimum of the protocol."""

    def __init__(self, sio: socketio.AsyncClient, workdir: Path) -> None:
        self.sio, self.workdir = sio, workdir
        self.pcs: list[RTCPeerConnection] = []

    async def send(self, to: str, payload: dict[str, Any]) -> None:
        await self.sio.call("peer_message", {"to_peer_id": to, "payload": payload}, timeout=TIMEOUT)

    async def on_message(self, data: dict[str, Any]) -> None:
        sender, payload = data["from_peer_id"], data["payload"]
        if payload["type"] == "job_request":
            await self.send(sender, {"type": "job_response", "accepted": True})
        elif payload["type"] == "offer":
            pc = RTCPeerConnection(make_configuration())
            self.pcs.append(pc)
            incoming = IncomingChannel(pc)
            answer = await create_answer(pc, payload["sdp"])
            await self.send(sender, {"type": "answer", "sdp": answer})
            channel = await incoming.wait_open()
            self.serve_channel(channel, self.workdir / secrets.token_hex(4))

    def serve_channel(self, channel: RTCDataChannel, job_dir: Path) -> None:
        job_dir.mkdir(parents=True)
        source = job_dir / "data.csv"
        parts: list[bytes] = []

        def on_message(message: bytes | str) -> None:
            if isinstance(message, bytes):
                parts.append(message)
            else:
                source.write_bytes(b"".join(parts))
                asyncio.get_running_loop().create_task(self.run_job(channel, source, job_dir / "outputs"))

        channel.on("message", on_message)

    async def run_job(self, channel: RTCDataChannel, source: Path, out_dir: Path) -> None:
        start = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *train_argv(source, out_dir), stdout=asyncio.subprocess.DEVNULL, start_new_session=True
        )
        await proc.wait()
        run_s = time.monotonic() - start
        for path in sorted(out_dir.iterdir()):
            data = path.read_bytes()
            channel.send(json.dumps({"file": path.name, "size": len(data)}))
            for offset in range(0, len(data), CHUNK):
                channel.send(data[offset : offset + CHUNK])
        channel.send(json.dumps({"done": True, "run_s": run_s, "rc": proc.returncode}))


async def serve_bare_worker(url: str, workdir: str) -> None:
    """The bare worker process until stdin closes."""
    enable_loopback_candidates(exclusive=True)
    sio = socketio.AsyncClient(reconnection=False)
    worker = BareWorker(sio, Path(workdir))
    sio.on("peer_message", worker.on_message)
    await sio.connect(url, auth={"peer_id": "bare-worker"}, transports=["websocket"], wait_timeout=10)
    print("READY", flush=True)
    await asyncio.to_thread(sys.stdin.read)
    for pc in worker.pcs:
        await pc.close()
    await sio.disconnect()


# -- measuring -------------------------------------------------------------------------------------------------


async def bare_jobs(url: str, csv: Path, out_root: Path, jobs: int) -> list[tuple[float, float, float]]:
    """(to-channel ms, wall s, run s) per job through the bare pipeline."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sio = socketio.AsyncClient(reconnection=False)
    sio.on("peer_message", lambda data: inbox.put_nowait(data["payload"]))
    await sio.connect(url, auth={"peer_id": "bare-client"}, transports=["websocket"], wait_timeout=10)

    async def send(payload: dict[str, Any]) -> None:
        await sio.call("peer_message", {"to_peer_id": "bare-worker", "payload": payload}, timeout=TIMEOUT)

    samples = []
    try:
        for n in range(jobs):
            async with asyncio.timeout(TIMEOUT):
                start = time.perf_counter()
                await send({"type": "job_request", "job_id": f"bare-{n}"})
                assert (await inbox.get())["accepted"]
                pc = RTCPeerConnection(make_configuration())
                channel, offer = await create_offer(pc)
                await send({"type": "offer", "sdp": offer})
                await accept_answer(pc, (await inbox.get())["sdp"])
                await wait_channel_open(pc, channel)
                to_channel = (time.perf_counter() - start) * 1000
                done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                out_dir = out_root / f"bare-{n}"
                out_dir.mkdir(parents=True)
                channel.on("message", _collector(out_dir, done))
                channel.send(csv.read_bytes())
                channel.send("run")
                result = await done
                wall = time.perf_counter() - start
                await pc.close()
            if result["rc"] != 0:
                raise RuntimeError(f"bare job exited with {result['rc']}")
            samples.append((to_channel, wall, float(result["run_s"])))
    finally:
        await sio.disconnect()
    return samples


def _collector(out_dir: Path, done: asyncio.Future[dict[str, Any]]) -> Any:
    """A channel message handler writing the bare worker's result files; resolves ``done`` at the end."""
    current: list[Any] = [None, bytearray()]

    def on_message(message: bytes | str) -> None:
        if isinstance(message, bytes):
            current[1] += message
            return
        if current[0] is not None:
            (out_dir / current[0]).write_bytes(current[1])
        info = json.loads(message)
        if info.get("done"):
            done.set_result(info)
        else:
            current[0], current[1] = Path(info["file"]).name, bytearray()

    return on_message


async def our_jobs(
    url: str, token: str, csv: Path, out_root: Path, jobs: int
) -> list[tuple[float, float, float]]:
    """(to-channel ms, wall s, run s) per job through JobClient → server → WorkerHost."""
    samples = []
    async with JobClient(url, token, "bench-client", loopback_only=True) as client:
        for n in range(jobs):
            async with asyncio.timeout(TIMEOUT):
                start = time.perf_counter()
                job = await client.submit("train-demo", CONFIG, [csv])
                outcome = await job.result(out_root / f"ours-{n}")
                wall = time.perf_counter() - start
            to_channel = (outcome.phases["reserve"] + outcome.phases["channel"]) * 1000
            samples.append((to_channel, wall, outcome.training_duration_minutes * 60))
    return samples


def stats(values: list[float]) -> tuple[float, float]:
    """(p50, p99)."""
    q = statistics.quantiles(values, n=100, method="inclusive")
    return q[49], q[98]


async def run(jobs: int, warmup: int) -> None:
    """Bare and ours in ABBA blocks (bare, ours, ours, bare) of jobs / 2 each, fresh servers per block."""
    token = secrets.token_hex(16)  # hex: a token starting with "-" breaks argparse
    half = max(1, jobs // 2)
    bare: list[tuple[float, float, float]] = []
    ours: list[tuple[float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="fsm-e2e-") as tmp:
        root = Path(tmp)
        csv = generate_sample_csv(root / "tiny.csv", rows=200, features=4, seed=1)
        for block, kind in enumerate(("bare", "ours", "ours", "bare")):
            if kind == "bare":
                bare += await bare_block(csv, root / f"bare{block}", half, warmup)
            else:
                ours += await ours_block(token, csv, root / f"ours{block}", half, warmup)
    report(len(ours), bare, ours)


async def bare_block(csv: Path, root: Path, jobs: int, warmup: int) -> list[tuple[float, float, float]]:
    relay = await start_bare_relay()
    bare_worker = await start_child("--serve-bare-worker", relay.url, str(root / "bare-worker"))
    await first_line(bare_worker)
    try:
        return (await bare_jobs(relay.url, csv, root / "bare-out", jobs + warmup))[warmup:]
    finally:
        await stop_child(bare_worker)
        await relay.stop()


async def ours_block(
    token: str, csv: Path, root: Path, jobs: int, warmup: int
) -> list[tuple[float, float, float]]:
    server: ServerProcess = await start_server_process([token], log_level="WARNING")
    worker = await start_child("--serve-worker", server.url, token, str(root / "worker"))
    try:
        await first_line(worker)
        return (await our_jobs(server.url, token, csv, root / "ours-out", jobs + warmup))[warmup:]
    finally:
        await stop_child(worker)
        await server.stop()


def report(jobs: int, bare: list[tuple[float, float, float]], ours: list[tuple[float, float, float]]) -> None:
    """The table and ``SUMMARY`` JSON lines (read by run_all.py)."""

    def figures(samples: list[tuple[float, float, float]]) -> dict[str, float]:
        ch50, ch99 = stats([s[0] for s in samples])
        ov50, ov99 = stats([(s[1] - s[2]) * 1000 for s in samples])
        wall50, _ = stats([s[1] * 1000 for s in samples])
        run50, _ = stats([s[2] * 1000 for s in samples])
        return {"ch50": ch50, "ch99": ch99, "ov50": ov50, "ov99": ov99, "wall50": wall50, "run50": run50}

    b, o = figures(bare), figures(ours)
    print(
        f"\nend to end on loopback: {jobs} tiny train-demo jobs each (200-row CSV, 2 epochs), after warm-up"
    )
    header = f"{'metric':<40}{'bare':>10}{'fsm_worker':>12}{'ours/bare':>11}{'target':>10}{'met':>6}"
    print(header)
    print("-" * len(header))
    for label, key, target in (
        ("job_request → channel open p50 (ms)", "ch50", TARGET_CHANNEL_MS),
        ("job_request → channel open p99 (ms)", "ch99", None),
        ("protocol overhead p50 (ms)", "ov50", None),
        ("protocol overhead p99 (ms)", "ov99", None),
        ("wall submit → results p50 (ms)", "wall50", None),
        ("job run time (worker-reported) p50 (ms)", "run50", None),
    ):
        tgt = "" if target is None else f"< {target:g}"
        met = "" if target is None else ("yes" if o[key] < target else "NO")
        print(f"{label:<40}{b[key]:>10.1f}{o[key]:>12.1f}{o[key] / b[key]:>10.2f}x{tgt:>10}{met:>6}")
    base = "bare relay + raw aiortc + direct spawn"
    for figure, key, limit in (
        ("e2e: job_request -> open channel p50", "ch50", TARGET_CHANNEL_MS),
        ("e2e: protocol overhead of a tiny job p50", "ov50", None),
    ):
        line = {"figure": figure, "ours": o[key], "baseline": b[key], "unit": "ms",
                "target": "" if limit is None else f"< {limit:g}",
                "met": None if limit is None else o[key] < limit, "baseline_name": base}  # fmt: skip
        print("SUMMARY " + json.dumps(line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--serve-worker", nargs=3, metavar=("URL", "TOKEN", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare-worker", nargs=2, metavar=("URL", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_worker:
        asyncio.run(serve_worker(*args.serve_worker))
    elif args.serve_bare_worker:
        asyncio.run(serve_bare_worker(*args.serve_bare_worker))
    else:
        asyncio.run(run(args.jobs, args.warmup))


if __name__ == "__main__":
    main()
