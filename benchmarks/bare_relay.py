"""The baseline server of the signaling, scale and end-to-end benchmarks: a bare python-socketio relay.

No auth, no registry, no validation: it remembers each connection's peer id, role and metadata, routes
`peer_message` to a room named after the target peer id, and answers `discover_peers` with every peer,
unfiltered. `python benchmarks/bare_relay.py [--redis URL]` prints `LISTENING <url>` and serves until it is
terminated; `start_bare_relay()` runs it as a child process.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import socketio
from aiohttp import web
from support.signaling import ServerProcess


def serve(redis_url: str | None = None) -> None:
    """Serve on a free loopback port (several processes sharing `redis_url` act as one relay)."""
    manager = socketio.AsyncRedisManager(redis_url, channel="bare") if redis_url else None
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager, async_handlers=False)
    peers: dict[str, tuple[str, str, Any]] = {}  # sid → (peer id, role, metadata)

    @sio.on("connect")  # type: ignore[untyped-decorator]
    async def connect(sid: str, _environ: Any, auth: Any) -> None:
        peers[sid] = (auth["peer_id"], auth.get("role", "client"), auth.get("metadata", {}))
        await sio.enter_room(sid, auth["peer_id"])

    @sio.on("disconnect")  # type: ignore[untyped-decorator]
    async def disconnect(sid: str, *_args: Any) -> None:
        peers.pop(sid, None)

    @sio.on("peer_message")  # type: ignore[untyped-decorator]
    async def peer_message(sid: str, data: Any) -> dict[str, Any]:
        out = {"from_peer_id": peers[sid][0], "to_peer_id": data["to_peer_id"], "payload": data["payload"]}
        await sio.emit("peer_message", out, to=data["to_peer_id"])
        return {"ok": True}

    @sio.on("discover_peers")  # type: ignore[untyped-decorator]
    async def discover_peers(sid: str, _data: Any) -> dict[str, Any]:
        found = [{"peer_id": p, "role": r, "metadata": m} for s, (p, r, m) in peers.items() if s != sid]
        return {"ok": True, "peers": found}

    app = web.Application()
    sio.attach(app)

    async def main() -> None:
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print(f"LISTENING http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


async def start_bare_relay(redis_url: str | None = None) -> ServerProcess:
    """The relay in a child process, once it listens."""
    args = ["--redis", redis_url] if redis_url else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve()), *args, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        while not (line := (await proc.stdout.readline()).decode()).startswith("LISTENING "):
            if not line:
                raise RuntimeError("the bare relay exited before it listened")
    return ServerProcess(proc, line.split()[1])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--redis", default=None, help="redis://HOST:PORT/DB, to run several relay processes as one"
    )
    serve(parser.parse_args().redis)
