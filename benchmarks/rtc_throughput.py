"""Data-channel throughput on loopback: raw TCP vs stock aiortc vs our defaults, step by step, one run.

Usage: .venv/bin/python benchmarks/rtc_throughput.py [--mib 100] [--stock-mib 30] [--rounds 2]

Both aiortc peers live in this process (one core does sender and receiver work). The stock rows move
``--stock-mib`` (stock is slow; its rate does not depend on size), all other rows ``--mib``. Every round runs
each configuration twice, in ABBA order (first to last, then last to first), so a slow spell on the shared
machine hits all of them alike; each row shows the median and the min-max over all runs, and its ratio to
stock aiortc per round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from functools import partial

from aiortc import RTCDataChannel, RTCPeerConnection
from rich.console import Console
from rich.table import Table

from fsm_worker.shells.rtc import (
    RtcOptions,
    create_peer_connection,
    enable_loopback_candidates,
    install_rtc_patches,
    make_configuration,
    tuning,
)

MIB = 1 << 20
TIMEOUT = 120.0


async def _open_pair(
    options: RtcOptions | None,
) -> tuple[RTCPeerConnection, RTCPeerConnection, RTCDataChannel, RTCDataChannel]:
    """Two peers in this process (plain aiortc when ``options`` is None), capabilities exchanged, one channel."""
    if options is None:
        offerer, answerer = RTCPeerConnection(make_configuration()), RTCPeerConnection(make_configuration())
    else:
        offerer, answerer = create_peer_connection(options), create_peer_connection(options)
    channel = offerer.createDataChannel("bench")
    incoming: asyncio.Future[RTCDataChannel] = asyncio.get_running_loop().create_future()
    answerer.on("datachannel", incoming.set_result)
    opened = asyncio.Event()
    channel.on("open", opened.set)
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    if options is not None:  # each side got the other's local_capability() in its offer/answer message
        agreed = tuning.negotiate(options, tuning.local_capability(options))
        tuning.apply_fast_path(answerer, agreed)
        tuning.apply_fast_path(offerer, agreed)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)
    remote = await incoming
    await opened.wait()
    return offerer, answerer, channel, remote


async def rtc_rate(total: int, message: int, options: RtcOptions | None) -> float:
    """MiB/s for ``total`` bytes sent as ``message``-byte messages over one channel."""
    offerer, answerer, channel, remote = await _open_pair(options)
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


Config = tuple[str, RtcOptions | None, bool]  # label, options (None: plain aiortc), moves --stock-mib


def configurations() -> list[Config]:
    """Stock, then our defaults built up one local knob at a time, and what a stock peer gets from us."""
    base = RtcOptions(loopback="only", socket_buffer=0, read_batch=1, sack_every=1)
    defaults = RtcOptions(loopback="only")
    return [
        ("stock aiortc", None, True),
        (
            "ours, stock packets (what a browser peer gets)",
            RtcOptions(loopback="only", packet_size="stock"),
            True,
        ),
        ("+ probed packet size (16 KiB here), DTLS buffers, cwnd", base, False),
        ("+ 4 MiB socket buffers", RtcOptions(loopback="only", read_batch=1, sack_every=1), False),
        ("+ batched datagram reads", RtcOptions(loopback="only", sack_every=1), False),
        ("+ delayed SACK (= the defaults)", defaults, False),
    ]


async def main(mib: int, stock_mib: int, rounds: int, message: int) -> None:
    install_rtc_patches()
    enable_loopback_candidates(exclusive=True)  # the plain aiortc peers of the stock row
    total, stock_total = mib * MIB, stock_mib * MIB
    configs = configurations()
    labels = ["raw TCP (asyncio streams)", *(label for label, _, _ in configs)]
    runs: dict[str, list[float]] = {label: [] for label in labels}
    per_round: dict[str, list[float]] = {label: [] for label in runs}
    jobs = [("raw TCP (asyncio streams)", partial(tcp_rate, total, message))] + [
        (label, partial(rtc_rate, stock_total if small else total, message, options))
        for label, options, small in configs
    ]
    for _ in range(rounds):
        got: dict[str, list[float]] = {label: [] for label in runs}
        for label, job in [*jobs, *reversed(jobs)]:
            rate = await job()
            runs[label].append(rate)
            got[label].append(rate)
        stock = statistics.mean(got["stock aiortc"])
        for label, rates in got.items():
            per_round[label].append(statistics.mean(rates) / stock)
    _print(runs, per_round, mib, stock_mib, message)


def _print(runs: dict[str, list[float]], per_round: dict[str, list[float]], mib: int, stock_mib: int,
           message: int) -> None:  # fmt: skip
    tcp = statistics.median(runs["raw TCP (asyncio streams)"])
    table = Table(title=f"aiortc data channel on loopback, one process, {message} B messages, ABBA rounds")
    for name in ("configuration", "MiB/s median", "min-max", "x stock per round", "% of TCP"):
        table.add_column(name, justify="left" if name == "configuration" else "right")
    for label, rates in runs.items():
        median = statistics.median(rates)
        ratios = ", ".join(f"{r:.2f}" for r in per_round[label])
        table.add_row(
            label, f"{median:.1f}", f"{min(rates):.1f}-{max(rates):.1f}", ratios, f"{100 * median / tcp:.1f}"
        )
    Console(width=130).print(table)
    print(f"(stock rows move {stock_mib} MiB, the others {mib} MiB)")
    stock = statistics.median(runs["stock aiortc"])
    ours = statistics.median(runs["+ delayed SACK (= the defaults)"])
    local = statistics.median(runs["ours, stock packets (what a browser peer gets)"])
    for figure, value, baseline, name in (
        ("rtc: our defaults vs stock aiortc", ours, stock, "stock aiortc"),
        ("rtc: our defaults vs raw TCP", ours, tcp, "raw TCP"),
        ("rtc: stock packets + local optimisations vs stock", local, stock, "stock aiortc"),
    ):
        data = {"figure": figure, "ours": value, "baseline": baseline, "unit": "MiB/s", "baseline_name": name}
        print("SUMMARY " + json.dumps(data))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--stock-mib", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--message", type=int, default=262144)
    args = parser.parse_args()
    asyncio.run(main(args.mib, args.stock_mib, args.rounds, args.message))
