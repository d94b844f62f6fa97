"""The packet-size search on real kernel paths: a 1500-MTU loopback in a network namespace of the test's own.

Each scenario runs ``netns_path.py`` under ``unshare -n`` (lo with MTU 1500; nftables drops or counts IP
fragments before reassembly). Integrity, not speed: every byte arrives, in both directions.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).with_name("netns_path.py")
SIZE = 8_000_000
MTU_PAYLOAD = 1500 - 20 - 8  # the largest UDP payload one unfragmented IPv4 datagram carries
ONE_RECORD = 16384 + 256  # the largest datagram carrying one DTLS record of a 16 KiB SCTP packet


def _namespaces_refused() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare / ip (util-linux, iproute2) not installed"
    if shutil.which("nft") is None:
        return "nft (nftables) not installed: ./run installs it"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"the kernel refuses a network namespace: {probe.stderr.strip()}"
    return None


_REFUSED = _namespaces_refused()
pytestmark = pytest.mark.skipif(_REFUSED is not None, reason=_REFUSED or "")


def run_scenario(scenario: str) -> dict[str, Any]:
    command = (
        f"ip link set lo mtu 1500 && ip link set lo up && exec {sys.executable} {SCRIPT} {scenario} {SIZE}"
    )
    done = subprocess.run(["unshare", "-n", "sh", "-c", command], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["up_ok"] and result["down_ok"], result  # byte-exact both ways
    return result


def test_clean_1500_mtu_path_chooses_large_packets() -> None:
    result = run_scenario("clean")
    for end in ("offerer", "answerer"):
        seen = result[end]
        assert 16384 in seen["sizes"] and seen["probes_acked"] >= 1, seen  # chosen by an acknowledged probe
        assert seen["largest_datagram"] > MTU_PAYLOAD  # the kernel fragmented and reassembled them
        assert seen["coalesced_records"] > seen["coalesced_datagrams"] > 0, seen  # records shared datagrams
        assert seen["largest_datagram"] > ONE_RECORD
        assert 3 * ONE_RECORD < seen["largest_datagram"] <= 65507, seen  # four records share one datagram
        assert seen["fused_records"] > 0, seen  # new DATA chunks took the fused send path


def test_fragment_dropping_path_probe_fails_and_unfragmented_packets_are_used() -> None:
    result = run_scenario("fragdrop")
    assert result["fragments"] > 0  # the large probes really were dropped
    for end in ("offerer", "answerer"):
        seen = result[end]
        assert seen["packet_size"] <= 1400 and all(size <= 1400 for size in seen["sizes"]), seen
        assert seen["probes_acked"] < seen["probes_sent"]


def test_path_turns_hostile_midway_recovers_and_loses_nothing() -> None:
    result = run_scenario("midway")
    assert result["size_before_hostile"] == 16384
    assert result["fragments"] > 0
    seen = result["offerer"]
    assert seen["fallbacks"] >= 1 and seen["packet_size"] <= 1400, seen
    assert seen["split_packets"] > 0  # chunks queued at 16 KiB were resent as pieces that fit
    assert seen["fused_records"] > 0, seen  # fused before the path turned hostile; aiortc's path after


def test_peer_that_does_not_split_is_never_sent_coalesced_records() -> None:
    result = run_scenario("older")
    for end in ("offerer", "answerer"):
        seen = result[end]
        assert 16384 in seen["sizes"], seen  # still the large packets
        assert seen["coalesced_records"] == 0 and seen["largest_datagram"] <= ONE_RECORD, seen
        assert seen["fused_records"] == 0, seen  # fused only while records are coalesced


def test_stock_peer_is_never_sent_a_large_packet() -> None:
    result = run_scenario("stock")
    seen = result["offerer"]
    assert seen["agreed"] is None and seen["probes_sent"] == 0, seen
    assert 0 < seen["largest_datagram"] <= MTU_PAYLOAD
    assert seen["coalesced_records"] == 0
    assert seen["fused_records"] == 0
    assert result["fragments"] == 0  # not one IP fragment on the path, either direction
