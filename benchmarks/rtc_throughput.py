"""Data-channel throughput on loopback: raw TCP vs stock aiortc vs each fast-path step, one run.

Usage: .venv/bin/python benchmarks/rtc_throughput.py [--mib 100] [--stock-mib 30] [--repeat 1]

Both aiortc peers live in this process (one core does sender and receiver work). The stock row
moves ``--stock-mib`` (stock is slow; its rate does not depend on size), all other rows ``--mib``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from functools import partial

import aioice.ice
import attrs
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection
from rich.console import Console
from rich.table import Table

from fsm_worker.shells.rtc import tuning
from fsm_worker.shells.rtc.tuning import FastPathProfile

MIB = 1 << 20
TIMEOUT = 120.0


def _loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


async def _open_pair(
    tune: bool,
) -> tuple[RTCPeerConnection, RTCPeerConnection, RTCDataChannel, RTCDataChannel]:
    """Two peers in this process, a negotiated capability exchange when ``tune``, one open channel."""
    config = RTCConfiguration(iceServers=[])
    offerer, answerer = RTCPeerConnection(config), RTCPeerConnection(config)
    channel = offerer.createDataChannel("bench")
    incoming: asyncio.Future[RTCDataChannel] = asyncio.get_running_loop().create_future()
    answerer.on("datachannel", incoming.set_result)
    opened = asyncio.Event()
    channel.on("open", opened.set)
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    if tune:  # each side got the other's local_capability() in its offer/answer message
        tuning.apply_fast_path(answerer, tuning.negotiate(tuning.local_capability()))
        tuning.apply_fast_path(offerer, tuning.negotiate(tuning.local_capability()))
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)
    remote = await incoming
    await opened.wait()
    return offerer, answerer, channel, remote


async def rtc_rate(total: int, message: int, tune: bool) -> float:
    """MiB/s for ``total`` bytes sent as ``message``-byte messages over one channel."""
    offerer, answerer, channel, remote = await _open_pair(tune)
    done = asyncio.Event()
    received = 0

    def on_message(data: bytes | str) -> None:
        nonlocal received
        received += len(data)
        if received >= total:
            done.set()

    remote.on("message", on_message)
    payload = os.urandom(message)
    low = asyncio.Event()
    channel.bufferedAmountLowThreshold = 1 * MIB
    channel.on("bufferedamountlow", low.set)
    try:
        async with asyncio.timeout(TIMEOUT):
            start = time.perf_counter()
            for offset in range(0, total, message):
                while channel.bufferedAmount > 4 * MIB:
                    low.clear()
                    await low.wait()
                channel.send(payload[: total - offset])
            await done.wait()
            return total / (time.perf_counter() - start) / MIB
    finally:
        await offerer.close()
        await answerer.close()


async def tcp_rate(total: int, message: int) -> float:
    """MiB/s of the same transfer over a loopback TCP socket (asyncio streams)."""
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = 0
        while received < total and (data := await reader.read(MIB)):
            received += len(data)
        done.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with asyncio.timeout(TIMEOUT), server:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        payload = os.urandom(message)
        start = time.perf_counter()
        for offset in range(0, total, message):
            writer.write(payload[: total - offset])
            await writer.drain()
        await done.wait()
        rate = total / (time.perf_counter() - start) / MIB
        writer.close()
    return rate


def steps() -> list[tuple[str, FastPathProfile, bool]]:
    """Cumulative tuning steps: (label, profile, aligned message size)."""
    base = attrs.evolve(tuning.LOOPBACK, socket_buffer=0, read_batch=1, sack_every=1)
    bufs = attrs.evolve(base, socket_buffer=tuning.LOOPBACK.socket_buffer)
    batch = attrs.evolve(bufs, read_batch=tuning.LOOPBACK.read_batch)
    return [
        ("+ 16 KiB SCTP packets, DTLS buffers, cwnd", base, False),
        ("+ 4 MiB socket buffers", bufs, False),
        ("+ batched datagram reads", batch, False),
        ("+ delayed SACK  (= LOOPBACK profile)", tuning.LOOPBACK, False),
        ("+ aligned messages", tuning.LOOPBACK, True),
        ("LAN profile (8 KiB packets), aligned", tuning.LAN, True),
    ]


async def main(mib: int, stock_mib: int, repeat: int, message: int) -> None:
    aioice.ice.get_host_addresses = _loopback_only
    total, stock_total = mib * MIB, stock_mib * MIB
    rows: list[tuple[str, int, int, float]] = []

    async def measure(label: str, size: int, msg: int, run: Callable[[], Awaitable[float]]) -> None:
        rows.append((label, size, msg, max([await run() for _ in range(repeat)])))

    await measure("raw TCP (asyncio streams)", total, message, partial(tcp_rate, total, message))
    tuning.disable_fast_path()
    await measure("stock aiortc", stock_total, message, partial(rtc_rate, stock_total, message, False))
    await measure("stock aiortc", stock_total, 16384, partial(rtc_rate, stock_total, 16384, False))
    for label, profile, aligned in steps():
        tuning.enable_fast_path(profile)
        msg = tuning.recommended_message_size(profile) if aligned else message
        await measure(label, total, msg, partial(rtc_rate, total, msg, True))
    tuning.disable_fast_path()
    _print(rows)


def _print(rows: list[tuple[str, int, int, float]]) -> None:
    tcp, stock = rows[0][3], rows[1][3]
    table = Table(title="aiortc data channel on loopback, one process (best of repeats)")
    for name in ("configuration", "MiB sent", "message B", "MiB/s", "x stock", "% of TCP"):
        table.add_column(name, justify="left" if name == "configuration" else "right")
    for label, size, msg, rate in rows:
        table.add_row(
            label, str(size // MIB), str(msg), f"{rate:.1f}", f"{rate / stock:.2f}", f"{100 * rate / tcp:.1f}"
        )
    Console(width=120).print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--stock-mib", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--message", type=int, default=65536)
    args = parser.parse_args()
    asyncio.run(main(args.mib, args.stock_mib, args.repeat, args.message))
