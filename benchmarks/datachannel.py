"""Upload throughput over the WebRTC data channel vs raw TCP, on loopback, in one run.

The receiver (worker side) runs in its own process, like a real worker; the sender runs here.
Both receivers do the same work: stream to disk and sha256 the bytes. Reports MiB/s with the
ratio to TCP, a dedupe repeat, setup time offer → open channel, and the receiver's memory
high-water mark (ru_maxrss growth during the transfer).

    .venv/bin/python benchmarks/datachannel.py --size-mb 100
    .venv/bin/python benchmarks/datachannel.py --chunk-size 262144 --high-water 4194304 --low-water 1048576
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing as mp
import os
import resource
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection
from rich.console import Console
from rich.table import Table

from fsm_worker.shells.rtc import (
    IncomingChannel,
    accept_answer,
    create_answer,
    create_offer,
    enable_loopback_candidates,
    make_configuration,
    wait_channel_open,
)
from fsm_worker.shells.rtc.tuning import (
    active_profile,
    apply_fast_path,
    enable_fast_path,
    local_capability,
    negotiate,
    recommended_message_size,
)
from fsm_worker.shells.transfer import (
    ClientTransferEndpoint,
    ContentStore,
    TransferTuning,
    WorkerTransferEndpoint,
)
from fsm_worker.shells.transfer.flow import ChannelWriter

MiB = 1024 * 1024
TIMEOUT = 600.0


def maxrss_mib() -> float:
    """This process's resident-set high-water mark (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- receiver process --------------------------------------------------------------------------------
class Receiver:
    """Serves commands from the benchmark over a pipe; owns the worker-side peers and sockets."""

    def __init__(self, conn: Connection, root: Path, tuning: TransferTuning) -> None:
        self.conn = conn
        self.root = root
        self.tuning = tuning
        self.store = ContentStore(root / "store")
        self.pcs: list[RTCPeerConnection] = []
        self.endpoints: list[WorkerTransferEndpoint] = []
        self.rss_before = maxrss_mib()

    async def serve(self) -> None:
        enable_loopback_candidates(exclusive=True)
        while True:
            command, arg = await asyncio.to_thread(self.conn.recv)
            if command == "quit":
                break
            self.conn.send(await getattr(self, f"do_{command}")(arg))
        for pc in self.pcs:
            await pc.close()
        self.conn.send(None)

    async def do_offer(self, arg: dict[str, str]) -> str:
        pc = RTCPeerConnection(make_configuration())
        self.pcs.append(pc)

        def attach(channel: RTCDataChannel) -> None:  # inside the datachannel event: no message lost
            if arg["job"] == "raw":
                self.count_bytes(channel)
                return
            self.endpoints.append(
                WorkerTransferEndpoint(
                    channel,
                    self.root / arg["job"],
                    self.store,
                    1 << 40,
                    on_commit=lambda _paths: None,
                    results=lambda: None,
                    tuning=self.tuning,
                )
            )

        IncomingChannel(pc, on_channel=attach)
        answer = await create_answer(pc, arg["sdp"])
        apply_tuning(pc)  # before the answer goes out
        return answer

    @staticmethod
    def count_bytes(channel: RTCDataChannel) -> None:
        """Baseline sink without the protocol: count bytes, answer the expected total with "done"."""
        received = 0
        expected: int | None = None

        def on_message(message: str | bytes) -> None:
            nonlocal received, expected
            if isinstance(message, str):
                expected = int(message)
            else:
                received += len(message)
            if expected is not None and received >= expected:
                channel.send("done")

        channel.on("message", on_message)

    async def do_mark(self, _arg: None) -> float:
        self.rss_before = maxrss_mib()
        return self.rss_before

    async def do_report(self, _arg: None) -> dict[str, Any]:
        stats = self.endpoints[-1].stats if self.endpoints else None
        return {
            "rss_before": self.rss_before,
            "rss_after": maxrss_mib(),
            "chunk_bytes_received": stats.chunk_bytes_received if stats else 0,
        }

    async def do_close(self, _arg: None) -> None:
        for pc in self.pcs:
            await pc.close()
        self.pcs.clear()

    async def do_tcp(self, job: str) -> int:
        job_dir = self.root / job
        job_dir.mkdir(parents=True, exist_ok=True)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            header = json.loads(await reader.readline())
            hasher = hashlib.sha256()
            remaining = header["size"]
            with (job_dir / header["name"]).open("wb") as f:
                while remaining:
                    data = await reader.read(min(remaining, 256 * 1024))
                    if not data:
                        break
                    f.write(data)
                    hasher.update(data)
                    remaining -= len(data)
            writer.write(hasher.hexdigest().encode() + b"\n")
            await writer.drain()
            writer.close()
            server.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port: int = server.sockets[0].getsockname()[1]
        return port


def receiver_main(conn: Connection, root: str, tuning: dict[str, int], fast_path: str) -> None:
    if fast_path != "off":
        enable_fast_path(fast_path)
    asyncio.run(Receiver(conn, Path(root), TransferTuning(**tuning)).serve())


def apply_tuning(pc: RTCPeerConnection) -> None:
    """Apply the other engineer's SCTP/DTLS fast path when enabled (both ends run this code)."""
    if active_profile() is not None:
        apply_fast_path(pc, negotiate(local_capability()))


# --- sender (this process) ---------------------------------------------------------------------------
class Bench:
    def __init__(self, conn: Connection, tuning: TransferTuning) -> None:
        self.conn = conn
        self.tuning = tuning

    async def call(self, command: str, arg: Any = None) -> Any:
        self.conn.send((command, arg))
        return await asyncio.to_thread(self.conn.recv)

    async def connect(self, job: str) -> tuple[RTCPeerConnection, Any, float]:
        pc = RTCPeerConnection(make_configuration())
        start = time.perf_counter()
        channel, offer = await create_offer(pc)
        apply_tuning(pc)  # before the answer is applied
        answer = await self.call("offer", {"sdp": offer, "job": job})
        await accept_answer(pc, answer)
        await wait_channel_open(pc, channel)
        return pc, channel, time.perf_counter() - start

    async def setup_times(self, n: int) -> list[float]:
        times = []
        for i in range(n):
            pc, _channel, elapsed = await self.connect(f"setup{i}")
            times.append(elapsed)
            await pc.close()
            await self.call("close")
        return times

    async def datachannel_upload(self, path: Path, job: str) -> tuple[float, int, dict[str, Any]]:
        pc, channel, _ = await self.connect(job)
        client = ClientTransferEndpoint(channel, tuning=self.tuning, reply_timeout=TIMEOUT)
        await self.call("mark")
        start = time.perf_counter()
        await client.upload([path])
        elapsed = time.perf_counter() - start
        report = await self.call("report")
        await pc.close()
        await self.call("close")
        return elapsed, client.stats.chunk_bytes_sent, report

    async def raw_channel_send(self, path: Path) -> float:
        """Stock data channel, no protocol: the same chunks and flow control, no disk or hash on receipt."""
        pc, channel, _ = await self.connect("raw")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_message(_message: str | bytes) -> None:
            if not done.done():
                done.set_result(None)

        channel.on("message", on_message)
        writer = ChannelWriter(channel, self.tuning)
        start = time.perf_counter()
        channel.send(str(path.stat().st_size))
        await writer.send_file(path, 0, path.stat().st_size)
        await done
        elapsed = time.perf_counter() - start
        await pc.close()
        await self.call("close")
        return elapsed

    async def tcp_upload(self, path: Path, job: str) -> float:
        port = await self.call("tcp", job)
        size = path.stat().st_size
        start = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        hasher = hashlib.sha256()
        writer.write(json.dumps({"name": path.name, "size": size}).encode() + b"\n")
        with path.open("rb") as f:
            while data := f.read(self.tuning.chunk_size):
                hasher.update(data)
                writer.write(data)
                await writer.drain()
        digest = (await reader.readline()).decode().strip()
        elapsed = time.perf_counter() - start
        writer.close()
        assert digest == hasher.hexdigest(), "TCP baseline hash mismatch"
        return elapsed


def write_file(path: Path, size: int) -> None:
    block = os.urandom(MiB)
    with path.open("wb") as f:
        for offset in range(0, size, MiB):
            f.write(block[: min(MiB, size - offset)])


async def run(args: argparse.Namespace) -> None:
    profile = enable_fast_path(args.fast_path) if args.fast_path != "off" else None
    if args.chunk_size:
        chunk_size = args.chunk_size
    elif profile is not None:
        chunk_size = recommended_message_size(negotiate(local_capability()))
    else:
        chunk_size = TransferTuning().chunk_size
    tuning = TransferTuning(chunk_size=chunk_size, high_water=args.high_water, low_water=args.low_water)
    enable_loopback_candidates(exclusive=True)
    with tempfile.TemporaryDirectory(prefix="dc-bench-") as tmp:
        root = Path(tmp)
        src = root / "upload.bin"
        size = args.size_mb * MiB
        write_file(src, size)
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=receiver_main,
            args=(child, str(root / "recv"), tuning_dict(tuning), args.fast_path),
        )
        proc.start()
        bench = Bench(parent, tuning)
        try:
            async with asyncio.timeout(TIMEOUT):
                setups = await bench.setup_times(args.setups)
                tcp = await bench.tcp_upload(src, "tcp")
                raw = await bench.raw_channel_send(src)
                dc, sent, report = await bench.datachannel_upload(src, "job1")
                dedupe, dedupe_sent, _ = await bench.datachannel_upload(src, "job2")
                await bench.call("quit")
        finally:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    show(args, tuning, size, setups, tcp, raw, dc, sent, dedupe, dedupe_sent, report)


def tuning_dict(tuning: TransferTuning) -> dict[str, int]:
    return {"chunk_size": tuning.chunk_size, "high_water": tuning.high_water, "low_water": tuning.low_water}


def show(
    args: argparse.Namespace,
    tuning: TransferTuning,
    size: int,
    setups: list[float],
    tcp: float,
    raw: float,
    dc: float,
    sent: int,
    dedupe: float,
    dedupe_sent: int,
    report: dict[str, Any],
) -> None:
    mib = size / MiB
    table = Table(
        title=f"Upload of {args.size_mb} MiB on loopback (fast path {args.fast_path}, chunk {tuning.chunk_size} B, "
        f"high/low water {tuning.high_water}/{tuning.low_water} B)"
    )
    for column in ("case", "seconds", "MiB/s", "vs raw TCP", "chunk bytes sent"):
        table.add_column(column, justify="right" if column != "case" else "left")
    tcp_rate = mib / tcp
    for name, seconds, sent_bytes in (
        ("raw TCP (asyncio streams, to disk + sha256)", tcp, size),
        ("data channel, raw send (no protocol, no disk)", raw, size),
        ("data channel upload (protocol, disk, sha256)", dc, sent),
        ("data channel, dedupe repeat", dedupe, dedupe_sent),
    ):
        rate = mib / seconds
        table.add_row(name, f"{seconds:.3f}", f"{rate:.1f}", f"{rate / tcp_rate:.3f}x", f"{sent_bytes:,}")
    console = Console(width=130)
    console.print(table)
    warm = setups[1:] or setups
    console.print(
        f"setup offer→open (receiver in another process): first (cold) {setups[0] * 1000:.0f} ms; "
        f"warm n={len(warm)}: median {statistics.median(warm) * 1000:.1f} ms, "
        f"min {min(warm) * 1000:.1f} ms, max {max(warm) * 1000:.1f} ms"
    )
    growth = report["rss_after"] - report["rss_before"]
    console.print(
        f"receiver ru_maxrss: {report['rss_before']:.1f} MiB before, {report['rss_after']:.1f} MiB after "
        f"the {mib:.0f} MiB upload (growth {growth:.1f} MiB = {growth / mib:.3f}x of the file)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="default 64 KiB; with --fast-path its recommended size"
    )
    parser.add_argument(
        "--fast-path",
        choices=["off", "loopback", "lan"],
        default="off",
        help="apply fsm_worker.shells.rtc.tuning on both ends (SCTP/DTLS packet size etc.)",
    )
    parser.add_argument("--high-water", type=int, default=TransferTuning().high_water)
    parser.add_argument("--low-water", type=int, default=TransferTuning().low_water)
    parser.add_argument("--setups", type=int, default=6, help="offer→open measurements (first is cold)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
