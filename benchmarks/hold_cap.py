"""What the room-wide hold cap costs an honest request (issue 10 item 8): one `hold` round trip per job taken.

Two setups, each a `fsm-worker server` process and one `fsm-worker worker` process on loopback:

- ``ours``: the default cap (`max_holds_per_client` 16): the worker claims a hold at the server before it
  answers a `job_request`, and releases it when the client cancels;
- ``no cap``: `--max-holds-per-client 0` (the baseline: the worker answers at once).

A client sends `job_request` and waits for the `job_response` (the figure: request → response round trip), then
`job_cancel` and waits for `job_cancelled`, ``--samples`` times per round; rounds alternate ABBA
(``--rounds 2``: ours, base, base, ours). Printed: median and p99 per setup, and their ratio.
Run: ``.venv/bin/python benchmarks/hold_cap.py [--samples 200] [--rounds 2] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support import cli_processes
from support.signaling import Inbox, free_port

from fsm_worker.shells.signaling import SignalingClient

TIMEOUT = 60.0


class Setup:
    """A server and one worker process; `caps` are the server's flags."""

    def __init__(self, name: str, caps: list[str]) -> None:
        self.name, self.caps = name, caps
        self.token, self.port = secrets.token_hex(12), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, workdir: Path) -> None:
        self.procs.append(await cli_processes.start(
            "server", "--port", str(self.port), "--token", self.token, *self.caps, ready="listening on",
            timeout=TIMEOUT,
        ))  # fmt: skip
        self.procs.append(await cli_processes.start(
            "worker", "--server", self.url, "--token", self.token, "--peer-id", "w1", "--gpu-memory-mb", "8192",
            "--workdir", str(workdir / self.name), "--no-journal", ready="connected", timeout=TIMEOUT,
        ))  # fmt: skip

    async def stop(self) -> None:
        for proc in reversed(self.procs):
            await cli_processes.stop(proc, TIMEOUT)


async def next_of(inbox: Inbox, kind: str, job_id: str) -> dict[str, object]:
    while True:
        _, payload = await inbox.next(timeout=TIMEOUT)
        if payload.get("app_message_type") == kind and payload.get("job_id") == job_id:
            return payload


async def round_trips(setup: Setup, samples: int, tag: str) -> list[float]:
    inbox = Inbox()
    client = SignalingClient(setup.url, setup.token, f"bench-{tag}", on_peer_message=inbox)
    await client.connect(timeout=TIMEOUT)
    rtts = []
    try:
        for n in range(samples):
            job_id = f"{tag}-{n}"
            request = {"app_message_type": "job_request", "job_id": job_id, "job_type": "train-demo"}
            start = time.perf_counter()
            assert (await client.send("w1", request)).delivered
            response = await next_of(inbox, "job_response", job_id)
            rtts.append((time.perf_counter() - start) * 1000)
            assert response["accepted"] is True, response
            assert (await client.send("w1", {"app_message_type": "job_cancel", "job_id": job_id})).delivered
            await next_of(inbox, "job_cancelled", job_id)
    finally:
        await client.close()
    return rtts


def p99(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.99) - 1)]


async def main(args: argparse.Namespace) -> None:
    ours, base = Setup("ours", []), Setup("no cap", ["--max-holds-per-client", "0"])
    results: dict[str, list[float]] = {ours.name: [], base.name: []}
    with tempfile.TemporaryDirectory() as tmp:
        for setup in (ours, base):
            await setup.start(Path(tmp))
        try:
            for setup in (ours, base):  # warm-up, not counted
                await round_trips(setup, 10, f"warm-{setup.name[:2]}")
            order = [ours, base, base, ours] * ((args.rounds + 1) // 2)
            for i, setup in enumerate(order[: 2 * args.rounds]):
                results[setup.name] += await round_trips(setup, args.samples, f"r{i}")
        finally:
            for setup in (ours, base):
                await setup.stop()
    print(f"{'setup':<8} {'samples':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for name, values in results.items():
        print(f"{name:<8} {len(values):>7} {statistics.median(values):>8.2f} {p99(values):>8.2f}")
    ours_p50, base_p50 = statistics.median(results["ours"]), statistics.median(results["no cap"])
    print(f"p50 ratio ours / no cap: {ours_p50 / base_p50:.2f}x (the hold round trip to the server)")
    for stat, a, b in (("p50", ours_p50, base_p50), ("p99", p99(results["ours"]), p99(results["no cap"]))):
        print("SUMMARY " + json.dumps({
            "figure": f"hold cap: job_request -> job_response {stat}", "ours": round(a, 3),
            "baseline": round(b, 3), "unit": "ms", "baseline_name": "same worker, --max-holds-per-client 0",
        }))  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="50 samples per round")
    parsed = parser.parse_args()
    if parsed.quick:
        parsed.samples = 50
    asyncio.run(main(parsed))
