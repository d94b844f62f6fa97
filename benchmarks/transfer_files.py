"""Many small files through our transfer protocol (default settings) vs raw TCP doing the same work, one run.

A SLEAP results folder or a set of label files is many files, not one: what costs here is per file (hashing
calls, headers, acknowledgements, opening and placing files), not per byte. Each round uploads then
downloads ``--files`` files of ``--kib`` KiB over a fresh connection, in ABBA order (ours, TCP, TCP, ours).
The receiver runs in its own process, writes every file to disk and sha256s it, like a worker. The TCP
baseline sends the files back to back on one connection (a header line, the bytes, a sha256 line each),
the receiver writes and hashes each file and answers every digest; the sender checks them all at the end.
The path is ``datachannel.py``'s (``--path mtu1500``: a network namespace of its own, root needed).

    .venv/bin/python benchmarks/transfer_files.py --files 500 --kib 32 --rounds 2 [--serial]

``--serial`` adds our upload with pipelining off (the next ``put`` waits for the ``ack``) to every round
(ours, TCP, not pipelined, not pipelined, TCP, ours): the same-run baseline of the pipelined upload.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datachannel as dc

from fsm_worker.shells.rtc import enable_loopback_candidates, install_rtc_patches

KiB = 1024


class FilesReceiver(dc.Receiver):
    async def do_tcp_files(self, arg: dict[str, Any]) -> int:
        """One TCP connection: receive files to disk + sha256 (up) or send the listed files (down)."""
        job_dir = self.root / arg["job"]
        job_dir.mkdir(parents=True, exist_ok=True)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if arg["direction"] == "up":
                for _ in range(arg["count"]):
                    await dc.tcp_receive(reader, writer, job_dir)
                    await reader.readline()  # the sender's own sha256 line
            else:
                await send_files(writer, [Path(p) for p in arg["paths"]])
                await reader.read()  # the client's digests, until it closes
            writer.close()
            server.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port: int = server.sockets[0].getsockname()[1]
        return port


async def send_files(writer: asyncio.StreamWriter, paths: list[Path]) -> list[str]:
    """Each file from disk, back to back: header line, bytes, sha256 line (hashed while sending)."""
    digests = []
    for path in paths:
        digests.append(await dc.tcp_send(writer, path))
    return digests


def receiver_main(conn: Connection, root: str) -> None:
    asyncio.run(FilesReceiver(conn, Path(root)).serve())


async def tcp_round(bench: dc.Bench, paths: list[Path]) -> tuple[float, float]:
    bench.runs += 1
    port = await bench.call("tcp_files", {"job": f"job{bench.runs}", "direction": "up", "count": len(paths)})
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = await send_files(writer, paths)
    got = [(await reader.readline()).decode().strip() for _ in paths]
    up = time.perf_counter() - start
    writer.close()
    assert got == sent, "TCP upload: sha256 mismatch"
    arg = {"job": "", "direction": "down", "paths": [str(p) for p in paths]}
    port = await bench.call("tcp_files", arg)
    down_dir = bench.root / f"tcpdown{bench.runs}"
    down_dir.mkdir()
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in paths:
        digest = await dc.tcp_receive(reader, writer, down_dir)
        assert digest == (await reader.readline()).decode().strip(), "TCP download: sha256 mismatch"
    down = time.perf_counter() - start
    writer.close()
    return up, down


async def ours_round(bench: dc.Bench, paths: list[Path], pipeline: bool = True) -> tuple[float, float]:
    pc, client = await bench.connect("ours")
    client.uploader.pipeline = pipeline  # off: the next put waits for the ack (the upload before pipelining)
    start = time.perf_counter()
    await client.upload(paths)
    up = time.perf_counter() - start
    start = time.perf_counter()
    got = await client.download(bench.root / f"down{bench.runs}")
    down = time.perf_counter() - start
    assert len(got) == len(paths)
    await pc.close()
    await bench.call("close")
    return up, down


async def run(args: argparse.Namespace) -> None:
    install_rtc_patches()
    enable_loopback_candidates(exclusive=True)
    with tempfile.TemporaryDirectory(prefix="files-bench-") as tmp:
        root = Path(tmp)
        src = root / "src"
        src.mkdir()
        paths = []
        for i in range(args.files):
            path = src / f"f{i:05d}.bin"
            path.write_bytes(os.urandom(args.kib * KiB))
            paths.append(path)
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=receiver_main, args=(child, str(root / "recv")))
        proc.start()
        bench = dc.Bench(parent, root, paths[0])
        bench.results = paths
        variants = ["ours", "tcp"] + (["serial"] if args.serial else [])
        rates: dict[str, dict[str, list[float]]] = {v: {"up": [], "down": []} for v in variants}
        try:
            async with asyncio.timeout(dc.TIMEOUT):
                for _round in range(args.rounds):
                    for variant in [*variants, *reversed(variants)]:
                        if variant == "tcp":
                            up, down = await tcp_round(bench, paths)
                        else:
                            up, down = await ours_round(bench, paths, pipeline=variant == "ours")
                        rates[variant]["up"].append(args.files / up)
                        rates[variant]["down"].append(args.files / down)
                await bench.call("quit")
        finally:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    mib = args.files * args.kib / 1024
    print(f"\n{args.path} path, {args.files} files of {args.kib} KiB ({mib:.1f} MiB) each way, "
          f"{args.rounds} ABBA round(s) ({', '.join([*variants, *reversed(variants)])})")  # fmt: skip
    print(f"{'variant':<40}{'upload files/s median (min-max)':<36}{'download files/s median (min-max)':<36}")
    names = {"ours": "ours (default settings)", "tcp": "raw TCP (same disk + sha256 work)",
             "serial": "ours, upload not pipelined"}  # fmt: skip
    for variant, name in names.items():
        if variant not in rates:
            continue
        print(f"{name:<40}{dc.spread(rates[variant]['up']):<36}{dc.spread(rates[variant]['down']):<36}")
    for direction, label in (("up", "upload"), ("down", "download")):
        ours = statistics.median(rates["ours"][direction])
        tcp = statistics.median(rates["tcp"][direction])
        print(f"ratio ours / TCP {label}: {ours / tcp:.3f}x ({ours * args.kib / 1024:.1f} MiB/s)")
        data = {"figure": f"transfer_files {args.path}: {label}, {args.files} x {args.kib} KiB", "ours": ours,
                "baseline": tcp, "unit": "files/s", "target": "report", "met": None, "baseline_name": "raw TCP"}  # fmt: skip
        print("SUMMARY " + json.dumps(data), flush=True)
    if args.serial:
        ours, serial = statistics.median(rates["ours"]["up"]), statistics.median(rates["serial"]["up"])
        print(f"ratio ours / not pipelined upload: {ours / serial:.3f}x")
        data = {"figure": f"transfer_files {args.path}: upload pipelined vs not, {args.files} x {args.kib} KiB",
                "ours": ours, "baseline": serial, "unit": "files/s", "target": "report", "met": None,
                "baseline_name": "ours, next put after the ack"}  # fmt: skip
        print("SUMMARY " + json.dumps(data), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--path", choices=["loopback", "mtu1500"], default="mtu1500")
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--kib", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds")
    parser.add_argument(
        "--serial", action="store_true", help="also ours with the upload not pipelined (ABCCBA)"
    )
    args = parser.parse_args()
    if args.path != "loopback" and os.environ.get(dc.IN_NETNS) != args.path:
        sys.exit(dc.enter_namespace(args.path))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
