"""Upload and download MiB/s through our transfer protocol: default settings vs stock aiortc vs raw TCP, one run.

The receiver (worker side) runs in its own process, like a real worker; the client runs here. Every variant
does the same work: the receiver streams the upload to disk and sha256s it; a download is read from disk,
hashed, sent, written to disk and verified. Variants run interleaved in ABBA order (ours, stock, TCP, TCP,
stock, ours per round), and each figure is reported as median with min-max over the rounds.

Paths (``--path``): ``loopback`` (this namespace's lo), ``mtu1500`` (a network namespace of its own whose lo has
MTU 1500: the kernel fragments large datagrams, as on Ethernet), ``fragdrop`` (the same, and nftables drops IP
fragments: a black hole for large datagrams; first one upload turns hostile midway, to time the fallback).
The namespace needs root (``unshare -n``) and, for ``fragdrop``, nftables.

    .venv/bin/python benchmarks/datachannel.py --path mtu1500 --size-mb 64 --rounds 2
    .venv/bin/python benchmarks/datachannel.py --path fragdrop
    .venv/bin/python benchmarks/datachannel.py --path mtu1500 --rounds 0 --memory-mb 2048
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection

from fsm_worker.shells.rtc import (
    IncomingChannel,
    RtcOptions,
    accept_answer,
    create_answer,
    create_offer,
    create_peer_connection,
    enable_loopback_candidates,
    install_rtc_patches,
    make_configuration,
    tuning,
    wait_channel_open,
)
from fsm_worker.shells.transfer import (
    ClientTransferEndpoint,
    ContentStore,
    TransferTuning,
    WorkerTransferEndpoint,
)

MiB = 1024 * 1024
TIMEOUT = 900.0
OURS = RtcOptions(loopback="only")  # the defaults, loopback candidates only
IN_NETNS = "FSM_BENCH_NETNS"
NFT_TABLE = "fsmbench"


def maxrss_mib() -> float:
    """This process's resident-set high-water mark (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """This process's CPU time so far (user + system, all threads)."""
    times = os.times()
    return times.user + times.system


def drop_fragments() -> None:
    """nftables: drop IP fragments before the kernel reassembles them (prerouting, priority -450)."""
    for command in (
        ["add", "table", "ip", NFT_TABLE],
        ["add", "chain", "ip", NFT_TABLE, "pre", "{ type filter hook prerouting priority -450; }"],
        [
            "add",
            "rule",
            "ip",
            NFT_TABLE,
            "pre",
            "ip",
            "frag-off",
            "&",
            "0x3fff",
            "!=",
            "0",
            "counter",
            "drop",
        ],
    ):
        subprocess.run(["nft", *command], check=True, capture_output=True)


def peer(variant: str) -> RTCPeerConnection:
    return create_peer_connection(OURS) if variant == "ours" else RTCPeerConnection(make_configuration())


def window(agreed: int | None, variant: str) -> TransferTuning:
    return TransferTuning(**tuning.transfer_window(agreed)) if variant == "ours" else TransferTuning()


# --- receiver process ----------------------------------------------------------------------------------------
class Receiver:
    """Serves commands from the benchmark over a pipe; owns the worker-side peers and sockets."""

    def __init__(self, conn: Connection, root: Path) -> None:
        self.conn = conn
        self.root = root
        self.pcs: list[RTCPeerConnection] = []
        self.rss_before = maxrss_mib()

    async def serve(self) -> None:
        install_rtc_patches()
        enable_loopback_candidates(exclusive=True)  # for the plain aiortc peers of the stock variant
        while True:
            command, arg = await asyncio.to_thread(self.conn.recv)
            if command == "quit":
                break
            self.conn.send(await getattr(self, f"do_{command}")(arg))
        await self.do_close(None)
        self.conn.send(None)

    async def do_offer(self, arg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        variant, job_dir, results = arg["variant"], self.root / arg["job"], [Path(p) for p in arg["results"]]
        for old in self.root.glob("job*"):  # keep the disk small (earlier jobs' stores have finished by now)
            await asyncio.to_thread(shutil.rmtree, old, True)
        pc = peer(variant)
        self.pcs.append(pc)
        store = ContentStore(job_dir / "store")  # per job: every upload sends its bytes (no dedupe)
        agreed = tuning.negotiate(OURS, arg["capability"]) if variant == "ours" else None

        def attach(channel: RTCDataChannel) -> None:  # inside the datachannel event: no message lost
            WorkerTransferEndpoint(
                channel, job_dir, store, 1 << 42, on_commit=lambda _p: None, results=lambda: results,
                tuning=window(agreed, variant), results_root=results[0].parent,
            )  # fmt: skip

        IncomingChannel(pc, on_channel=attach)
        answer = await create_answer(pc, arg["sdp"])
        if variant == "ours":
            tuning.apply_fast_path(pc, agreed)  # before the answer goes out
        return answer, tuning.capability_options(OURS) if variant == "ours" else {}

    async def do_mark(self, _arg: None) -> float:
        self.rss_before = maxrss_mib()
        return self.rss_before

    async def do_cpu(self, _arg: None) -> float:
        return cpu_seconds()

    async def do_memory(self, _arg: None) -> tuple[float, float]:
        return self.rss_before, maxrss_mib()

    async def do_close(self, _arg: None) -> None:
        for pc in self.pcs:
            await pc.close()
        self.pcs.clear()

    async def do_tcp(self, arg: dict[str, str]) -> int:
        """One TCP connection: receive a file to disk + sha256 (upload) or send one from disk (download)."""
        job_dir = self.root / arg["job"]
        job_dir.mkdir(parents=True, exist_ok=True)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if arg["direction"] == "up":
                await tcp_receive(reader, writer, job_dir)
            else:
                await tcp_send(writer, Path(arg["path"]))
            writer.close()
            server.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port: int = server.sockets[0].getsockname()[1]
        return port


async def tcp_receive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, job_dir: Path) -> str:
    """Receive one file to disk + sha256; answer and return its sha256."""
    header = json.loads(await reader.readline())
    hasher, remaining = hashlib.sha256(), header["size"]
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
    return hasher.hexdigest()


async def tcp_send(writer: asyncio.StreamWriter, path: Path) -> str:
    """Send one file from disk, hashing it; append and return its sha256."""
    hasher = hashlib.sha256()
    writer.write(json.dumps({"name": path.name, "size": path.stat().st_size}).encode() + b"\n")
    with path.open("rb") as f:
        while data := f.read(256 * 1024):
            hasher.update(data)
            writer.write(data)
            await writer.drain()
    writer.write(hasher.hexdigest().encode() + b"\n")
    await writer.drain()
    return hasher.hexdigest()


def receiver_main(conn: Connection, root: str) -> None:
    asyncio.run(Receiver(conn, Path(root)).serve())


# --- client (this process) ---------------------------------------------------------------------------------
class Bench:
    def __init__(self, conn: Connection, root: Path, src: Path) -> None:
        self.conn = conn
        self.root = root
        self.src = src
        self.results = [src]  # what the worker offers for download (one folder)
        self.runs = 0
        self.cpu: dict[str, list[float]] = {}  # "variant direction side" -> CPU ms per MiB, per run

    async def call(self, command: str, arg: Any = None) -> Any:
        self.conn.send((command, arg))
        return await asyncio.to_thread(self.conn.recv)

    async def connect(self, variant: str) -> tuple[RTCPeerConnection, ClientTransferEndpoint]:
        self.runs += 1
        pc = peer(variant)
        channel, offer = await create_offer(pc)
        if variant == "ours":
            tuning.apply_fast_path(pc, None)  # read side first
        arg = {"sdp": offer, "variant": variant, "job": f"job{self.runs}", "results": [str(p) for p in self.results],
               "capability": tuning.local_capability(OURS) if variant == "ours" else None}  # fmt: skip
        answer, options = await self.call("offer", arg)
        agreed = tuning.negotiate(OURS, options.get(tuning.CAPABILITY_KEY)) if variant == "ours" else None
        if variant == "ours":
            tuning.apply_fast_path(pc, agreed)  # before the answer is applied
        await accept_answer(pc, answer)
        await wait_channel_open(pc, channel)
        return pc, ClientTransferEndpoint(channel, tuning=window(agreed, variant), reply_timeout=TIMEOUT)

    async def channel_run(self, variant: str, on_connected: Callable[[RTCPeerConnection], None] | None = None
                          ) -> tuple[float, float, RTCPeerConnection]:  # fmt: skip
        """Upload then download the source file over one fresh connection: (upload s, download s, pc)."""
        pc, client = await self.connect(variant)
        if on_connected is not None:
            on_connected(pc)
        mib = self.src.stat().st_size / MiB
        cpu = (cpu_seconds(), await self.call("cpu"))
        start = time.perf_counter()
        await client.upload([self.src])
        up = time.perf_counter() - start
        cpu = await self.note_cpu(variant, "up", mib, cpu)
        start = time.perf_counter()
        await client.download(self.root / f"down{self.runs}")
        down = time.perf_counter() - start
        await self.note_cpu(variant, "down", mib, cpu)
        await pc.close()
        await self.call("close")
        (self.root / f"down{self.runs}" / self.src.name).unlink(missing_ok=True)
        return up, down, pc

    async def note_cpu(self, variant: str, direction: str, mib: float, before: tuple[float, float]
                       ) -> tuple[float, float]:  # fmt: skip
        """Record both processes' CPU ms per MiB since ``before``; return the new readings."""
        now = (cpu_seconds(), await self.call("cpu"))
        for side, a, b in (("client", before[0], now[0]), ("worker", before[1], now[1])):
            self.cpu.setdefault(f"{variant} {direction} {side}", []).append((b - a) * 1000 / mib)
        return now

    async def tcp_run(self) -> tuple[float, float]:
        self.runs += 1
        port = await self.call("tcp", {"job": f"job{self.runs}", "direction": "up"})
        start = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sent = await tcp_send(writer, self.src)
        digest = (await reader.readline()).decode().strip()
        up = time.perf_counter() - start
        writer.close()
        assert digest == sent, "TCP upload: sha256 mismatch"
        port = await self.call("tcp", {"job": "", "direction": "down", "path": str(self.src)})
        start = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        down_dir = self.root / "tcpdown"
        down_dir.mkdir(exist_ok=True)
        got = await tcp_receive(reader, writer, down_dir)
        down = time.perf_counter() - start
        assert got == (await reader.readline()).decode().strip(), "TCP download: sha256 mismatch"
        writer.close()
        return up, down


def write_file(path: Path, size: int) -> None:
    block = os.urandom(MiB)
    with path.open("wb") as f:
        for offset in range(0, size, MiB):
            f.write(block[: min(MiB, size - offset)])


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f}, n={len(values)})"


async def run(args: argparse.Namespace) -> None:
    install_rtc_patches()
    enable_loopback_candidates(exclusive=True)
    with tempfile.TemporaryDirectory(prefix="dc-bench-") as tmp:
        root = Path(tmp)
        src = root / "upload.bin"
        write_file(src, max(args.size_mb, args.memory_mb) * MiB)
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=receiver_main, args=(child, str(root / "recv")))
        proc.start()
        bench = Bench(parent, root, src)
        try:
            async with asyncio.timeout(TIMEOUT):
                if args.memory_mb:
                    await memory_run(bench, args.memory_mb)
                    write_file(src, args.size_mb * MiB)
                if args.path == "fragdrop":
                    await fallback_run(bench, args.size_mb)
                if args.rounds:
                    await abba(bench, args)
                await bench.call("quit")
        finally:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()


async def memory_run(bench: Bench, size_mb: int) -> None:
    await bench.call("mark")
    pc, client = await bench.connect("ours")
    start = time.perf_counter()
    await client.upload([bench.src])
    seconds = time.perf_counter() - start
    await pc.close()
    before, after = await bench.call("memory")
    await bench.call("close")
    growth = after - before
    print(f"{size_mb} MiB upload (default settings): {size_mb / seconds:.1f} MiB/s; receiver ru_maxrss "
          f"{before:.1f} → {after:.1f} MiB (growth {growth:.1f} MiB = {growth / size_mb:.4f}x of the file)")  # fmt: skip
    summary(f"datachannel: receiver memory growth, {size_mb} MiB upload", growth, None, "MiB", "bounded")


async def fallback_run(bench: Bench, size_mb: int) -> None:
    """One upload on the clean 1500-MTU path; IP fragments start being dropped once a third went out."""
    turned: list[float] = []
    tasks: list[asyncio.Future[None]] = []

    def watch(pc: RTCPeerConnection) -> None:
        async def turn_hostile() -> None:
            while (report := tuning.path_report(pc)) is None or report.bytes_sent < size_mb * MiB // 3:
                await asyncio.sleep(0.005)
            drop_fragments()
            turned.append(asyncio.get_running_loop().time())

        tasks.append(asyncio.ensure_future(turn_hostile()))

    up, _down, pc = await bench.channel_run("ours", watch)
    report = tuning.path_report(pc)
    assert report is not None and turned
    after = [t - turned[0] for t, size in zip(report.changed_at, report.sizes, strict=True) if t >= turned[0]]
    latency = after[0] if after else float("nan")
    print(f"midway black hole: sizes {report.sizes}, fallback {latency * 1000:.0f} ms after fragments started "
          f"being dropped; upload completed at {size_mb / up:.1f} MiB/s, {report.split_packets} packets resent "
          "as pieces")  # fmt: skip
    summary("datachannel fragdrop: fallback after the path turns hostile", latency, None, "s", "<= 1 s",
            latency <= 1.0)  # fmt: skip


async def abba(bench: Bench, args: argparse.Namespace) -> None:
    results: dict[str, dict[str, list[float]]] = {v: {"up": [], "down": []} for v in ("ours", "stock", "tcp")}
    ratios: dict[str, list[float]] = {"up/stock": [], "down/stock": [], "up/tcp": [], "down/tcp": []}
    mib = args.size_mb
    bench.cpu.clear()  # the ABBA rounds only
    for _round in range(args.rounds):
        got: dict[str, dict[str, list[float]]] = {v: {"up": [], "down": []} for v in results}
        for variant in ("ours", "stock", "tcp", "tcp", "stock", "ours"):
            if variant == "tcp":
                up, down = await bench.tcp_run()
            else:
                up, down, pc = await bench.channel_run(variant)
                if (
                    variant == "ours"
                    and (seen := tuning.path_report(pc)) is not None
                    and seen.sizes != [16384]
                ):
                    print(
                        f"  (client's packet sizes in that run: {seen.sizes}, {seen.fallbacks} fallback(s))"
                    )
            for direction, seconds in (("up", up), ("down", down)):
                got[variant][direction].append(mib / seconds)
                results[variant][direction].append(mib / seconds)
        for direction in ("up", "down"):
            ours = statistics.mean(got["ours"][direction])
            ratios[f"{direction}/stock"].append(ours / statistics.mean(got["stock"][direction]))
            ratios[f"{direction}/tcp"].append(ours / statistics.mean(got["tcp"][direction]))
    print(
        f"\n{args.path} path, {mib} MiB each way, {args.rounds} ABBA round(s) (ours, stock, TCP, TCP, stock, ours)"
    )
    print(f"{'variant':<40}{'upload MiB/s median (min-max)':<34}{'download MiB/s median (min-max)':<34}")
    names = {"ours": "ours (default settings)", "stock": "stock aiortc (same protocol)",
             "tcp": "raw TCP (same disk + sha256 work)"}  # fmt: skip
    for variant, name in names.items():
        print(f"{name:<40}{spread(results[variant]['up']):<34}{spread(results[variant]['down']):<34}")
    for variant in ("ours", "stock"):
        print(f"CPU ms per MiB, {names[variant]}, median (min-max): " + "; ".join(
            f"{d} {side} {spread(bench.cpu[f'{variant} {d} {side}'])}"
            for d in ("up", "down") for side in ("client", "worker")))  # fmt: skip
    for key, values in ratios.items():
        print(f"ratio ours / {key.split('/')[1]:<6} {key.split('/')[0]:<5}: per round " +
              ", ".join(f"{v:.2f}x" for v in values))  # fmt: skip
    for direction, label in (("up", "upload"), ("down", "download")):
        ours = statistics.median(results["ours"][direction])
        stock = statistics.median(results["stock"][direction])
        tcp = statistics.median(results["tcp"][direction])
        need = 8.0 if args.path != "fragdrop" else 1.0
        summary(f"datachannel {args.path}: {label} vs stock aiortc", ours, stock, "MiB/s", f">= {need:g}x",
                ours / stock >= need, "stock aiortc")  # fmt: skip
        if args.path != "fragdrop":
            summary(f"datachannel {args.path}: {label} vs raw TCP", ours, tcp, "MiB/s", ">= 0.3x",
                    ours / tcp >= 0.3, "raw TCP")  # fmt: skip


def summary(figure: str, ours: float, baseline: float | None, unit: str, target: str = "",
            met: bool | None = None, baseline_name: str = "") -> None:  # fmt: skip
    data = {"figure": figure, "ours": ours, "baseline": baseline, "unit": unit, "target": target, "met": met,
            "baseline_name": baseline_name}  # fmt: skip
    print("SUMMARY " + json.dumps(data), flush=True)


def enter_namespace(path: str) -> int:
    """Re-run this script inside a network namespace of its own (lo with MTU 1500)."""
    script = 'ip link set lo mtu 1500 && ip link set lo up && exec "$@"'
    command = ["unshare", "-n", "sh", "-c", script, "sh", sys.executable, *sys.argv]
    return subprocess.run(command, env={**os.environ, IN_NETNS: path}).returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--path", choices=["loopback", "mtu1500", "fragdrop"], default="mtu1500")
    parser.add_argument("--size-mb", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds (0: none)")
    parser.add_argument(
        "--memory-mb", type=int, default=0, help="first, one upload of this size: receiver memory"
    )
    args = parser.parse_args()
    if args.path != "loopback" and os.environ.get(IN_NETNS) != args.path:
        sys.exit(enter_namespace(args.path))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
