"""Run inside a network namespace (see test_path_probing.py): two aiortc peers over a real kernel path.

``python netns_path.py SCENARIO SIZE`` prints one JSON line: the sha256 of what was sent and received in
each direction, both ends' path reports and the nftables counters. Scenarios:

- ``clean``: 1500-MTU loopback, both ends capable;
- ``fragdrop``: IP fragments dropped (nftables, prerouting priority -450) from the start;
- ``midway``: fragments start being dropped once a third of the upload went out on 16 KiB packets;
- ``stock``: the answerer is a plain aiortc peer; fragments are only counted;
- ``older``: the answerer is capable but does not split coalesced datagrams (no ``datagram`` advertised).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection

from fsm_worker.shells.rtc import RtcOptions, create_peer_connection, install_rtc_patches, tuning

STEP = 120.0
NFT_TABLE = "fsmtest"


def nft(*script: str) -> None:
    subprocess.run(["nft", *script], check=True, capture_output=True)


def add_fragment_rule(drop: bool) -> None:
    """Count (and with ``drop``, drop) IP fragments before the kernel reassembles them."""
    nft("add", "table", "ip", NFT_TABLE)
    nft("add", "chain", "ip", NFT_TABLE, "pre", "{ type filter hook prerouting priority -450; }")
    action = ["counter", "drop"] if drop else ["counter"]
    nft("add", "rule", "ip", NFT_TABLE, "pre", "ip", "frag-off", "&", "0x3fff", "!=", "0", *action)


def fragments_seen() -> int:
    listed = subprocess.run(["nft", "-j", "list", "ruleset"], check=True, capture_output=True, text=True)
    total = 0
    for item in json.loads(listed.stdout).get("nftables", []):
        for expr in item.get("rule", {}).get("expr", []):
            if "counter" in expr:
                total += int(expr["counter"]["packets"])
    return total


async def send_all(channel: RTCDataChannel, data: bytes, on_progress: Any = None) -> None:
    low = asyncio.Event()
    channel.bufferedAmountLowThreshold = 1 << 20
    channel.on("bufferedamountlow", low.set)
    message = 256 * 1024
    for offset in range(0, len(data), message):
        while channel.bufferedAmount > 4 << 20:
            low.clear()
            await low.wait()
        channel.send(data[offset : offset + message])
        if on_progress is not None:
            on_progress(offset + message)


def receiver(channel: RTCDataChannel, size: int) -> asyncio.Future[str]:
    digest, got = hashlib.sha256(), 0
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_message(chunk: bytes | str) -> None:
        nonlocal got
        assert isinstance(chunk, bytes)
        digest.update(chunk)
        got += len(chunk)
        if got >= size and not done.done():
            done.set_result(digest.hexdigest())

    channel.on("message", on_message)
    return done


async def open_pair(
    answerer_capable: bool, answerer_splits: bool = True
) -> tuple[RTCPeerConnection, RTCPeerConnection, Any, Any]:
    install_rtc_patches()
    options = RtcOptions(loopback="only")
    answerer_options = RtcOptions(loopback="only", max_datagram=0) if not answerer_splits else options
    offerer = create_peer_connection(options)
    answerer = create_peer_connection(
        answerer_options if answerer_capable else RtcOptions(loopback="only", packet_size="stock")
    )
    out = offerer.createDataChannel("t")
    incoming: asyncio.Future[RTCDataChannel] = asyncio.get_running_loop().create_future()
    answerer.on("datachannel", incoming.set_result)
    opened = asyncio.Event()
    out.on("open", opened.set)
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    tuning.apply_fast_path(offerer, None)
    offer_cap = tuning.local_capability(options)
    answer_cap = tuning.local_capability(answerer_options) if answerer_capable else None
    if answerer_capable:
        tuning.apply_fast_path(answerer, tuning.negotiate(answerer_options, offer_cap))
    tuning.apply_fast_path(offerer, tuning.negotiate(options, answer_cap))
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)
    back = await incoming
    await opened.wait()
    return offerer, answerer, out, back


def describe(pc: RTCPeerConnection) -> dict[str, Any]:
    report = tuning.path_report(pc)
    return vars(report) if report is not None else {}


async def main(scenario: str, size: int) -> dict[str, Any]:
    if scenario in ("fragdrop", "stock"):
        add_fragment_rule(drop=scenario == "fragdrop")
    async with asyncio.timeout(STEP):
        offerer, answerer, out, back = await open_pair(
            answerer_capable=scenario != "stock", answerer_splits=scenario != "older"
        )
        up, down = os.urandom(size), os.urandom(size // 2)
        hostile_at: float | None = None
        size_before: int | None = None

        def progress(sent: int) -> None:
            nonlocal hostile_at, size_before
            seen = describe(offerer)
            on_large = (
                seen["packet_size"] == 16384
            )  # the scenario: a path that turns hostile under large packets
            if scenario == "midway" and hostile_at is None and on_large and seen["bytes_sent"] >= size // 3:
                size_before = seen["packet_size"]
                add_fragment_rule(drop=True)
                hostile_at = asyncio.get_running_loop().time()

        got_up, got_down = receiver(back, len(up)), receiver(out, len(down))
        await asyncio.gather(send_all(out, up, progress), send_all(back, down))
        received = await asyncio.gather(got_up, got_down)
        result = {
            "up_ok": received[0] == hashlib.sha256(up).hexdigest(),
            "down_ok": received[1] == hashlib.sha256(down).hexdigest(),
            "offerer": describe(offerer),
            "answerer": describe(answerer),
            "fragments": fragments_seen(),
            "size_before_hostile": size_before,
        }
        await offerer.close()
        await answerer.close()
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], int(sys.argv[2])))))
