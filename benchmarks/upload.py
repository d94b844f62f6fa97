"""Upload MiB/s through the client's upload shell and core, this tree vs another checkout, same run.

Run: `python benchmarks/upload.py --against DIR [--size-mb 32] [--rounds 4]`. Each round uploads one file of
`--size-mb` MiB from a `ClientTransferEndpoint` to a `WorkerTransferEndpoint` over real aiortc peers on
loopback, both in one fresh interpreter (so both trees pay the same for aiortc), and the rounds of this tree
and of `DIR` alternate in ABBA order; the medians and their ratio are printed. Without `--against` it prints
this tree's rounds only. `--core` also prints the pure upload core's own rate: `ChunkSent` events per second
(the per-chunk cost the core adds to a stream, next to the chunks per second the channel carries).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported in the measured process only (from the tree under test)
    from aiortc import RTCDataChannel, RTCPeerConnection

MiB = 1024 * 1024


async def _link() -> tuple[RTCPeerConnection, RTCPeerConnection, RTCDataChannel, RTCDataChannel]:
    from aiortc import RTCPeerConnection

    from fsm_worker.shells.rtc import (
        IncomingChannel,
        accept_answer,
        create_answer,
        create_offer,
        enable_loopback_candidates,
        make_configuration,
        wait_channel_open,
    )

    enable_loopback_candidates(exclusive=True)

    client_pc = RTCPeerConnection(make_configuration())
    worker_pc = RTCPeerConnection(make_configuration())
    incoming = IncomingChannel(worker_pc)
    client, offer = await create_offer(client_pc, timeout=20)
    answer = await create_answer(worker_pc, offer, timeout=20)
    await accept_answer(client_pc, answer, timeout=20)
    worker = await incoming.wait_open(timeout=20)
    await wait_channel_open(client_pc, client, timeout=20)
    return client_pc, worker_pc, client, worker


async def _one_upload(size: int) -> float:
    from fsm_worker.shells.transfer import ClientTransferEndpoint, ContentStore, WorkerTransferEndpoint

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "input.bin"
        with src.open("wb") as f:
            f.write(os.urandom(size))
        client_pc, worker_pc, client_channel, worker_channel = await _link()
        WorkerTransferEndpoint(
            worker_channel,
            Path(tmp) / "job",
            ContentStore(Path(tmp) / "store"),
            2 * size,
            lambda _: None,
            lambda: None,
        )
        client = ClientTransferEndpoint(client_channel)  # type: ignore[arg-type]
        start = time.perf_counter()
        await client.upload([src])
        elapsed = time.perf_counter() - start
        await client_pc.close()  # type: ignore[attr-defined]
        await worker_pc.close()  # type: ignore[attr-defined]
    return size / MiB / elapsed


def core_rate(chunks: int = 200_000) -> float:
    """ChunkSent events/s through the pure upload core (progress included)."""
    from fsm_worker.protocol.transfer.frames import Ready
    from fsm_worker.protocol.transfer.uploader import UploadSender
    from fsm_worker.protocol.transfer.uploader_steps import ChunkSent, FrameIn, LocalFile, UploadRequested

    core = UploadSender()
    core.handle(UploadRequested((LocalFile("a", chunks, "0" * 64),)), 0.0)
    core.handle(FrameIn(Ready(name="a", offset=0)), 0.0)
    start = time.perf_counter()
    for done in range(1, chunks + 1):
        core.handle(ChunkSent(done), 0.0)
    return chunks / (time.perf_counter() - start)


def _round(tree: str, size_mb: int) -> float:
    env = {**os.environ, "PYTHONPATH": tree}
    command = [sys.executable, __file__, "--single", "--size-mb", str(size_mb)]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True, cwd=tree).stdout
    return float(out.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4, help="ABBA rounds per tree")
    parser.add_argument("--against", metavar="DIR", help="another checkout to compare the upload with")
    parser.add_argument("--core", action="store_true", help="also the pure core's ChunkSent events/s")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        print(asyncio.run(_one_upload(args.size_mb * MiB)))
        return
    here = str(Path(__file__).resolve().parent.parent)
    trees = [here] + ([str(Path(args.against).resolve())] if args.against else [])
    rates: dict[str, list[float]] = {tree: [] for tree in trees}
    for n in range(args.rounds):  # ABBA: A B B A ...
        for tree in trees if n % 2 == 0 else trees[::-1]:
            rates[tree].append(_round(tree, args.size_mb))
    print(f"{'upload of ' + str(args.size_mb) + ' MiB':<40}{'MiB/s (median)':>16}{'min-max':>16}")
    for tree in trees:
        label = "this tree" if tree == here else f"baseline: {tree}"
        values = rates[tree]
        print(f"{label:<40}{statistics.median(values):>16.1f}{min(values):>8.1f}-{max(values):<7.1f}")
    if args.against:
        ratio = statistics.median(rates[here]) / statistics.median(rates[trees[1]])
        print(f"ratio this/baseline: {ratio:.3f} ({args.rounds} rounds each, ABBA)")
    if args.core:
        print(f"upload core: {core_rate():,.0f} ChunkSent events/s")


if __name__ == "__main__":
    main()
