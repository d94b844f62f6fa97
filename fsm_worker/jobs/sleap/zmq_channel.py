"""sleap-nn's structured channel, worker side: its ZMQ progress publisher and its stop controller.

sleap-nn *connects* a PUB socket to ``trainer_config.zmq.publish_port`` and a SUB socket to
``controller_port`` on 127.0.0.1, so the worker binds first: a SUB for progress, a PUB for commands.
``ZmqProgress`` (pure) turns its messages into progress-channel items; ``SleapZmqChannel`` does the IO.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs

from fsm_worker.jobs.parsers import ParsedLine
from fsm_worker.jobs.progress import MAX_KEY_CHARS, MAX_METRICS, ProgressLine

log = logging.getLogger(__name__)

STOP_COMMAND = json.dumps({"command": "stop"})
STOP_REPEAT_SECONDS = 0.5
POLL_MS = 100
CLOSE_WAIT_SECONDS = 1.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the channel binds it before the job starts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _numbers(logs: object) -> dict[str, float]:
    if not isinstance(logs, Mapping):
        return {}
    out: dict[str, float] = {}
    for key, value in logs.items():
        short = isinstance(key, str) and len(key) <= MAX_KEY_CHARS and len(out) < MAX_METRICS - 2
        if short and isinstance(value, int | float) and not isinstance(value, bool) and value == value:
            out[key] = float(value)
    return out


@attrs.define
class ZmqProgress:
    """sleap-nn ZMQ messages → ``ProgressLine``s; ``epochs`` and ``steps_per_epoch`` scale progress."""

    epochs: int
    steps_per_epoch: int | None = None
    _steps: int = attrs.field(default=0, init=False)

    def translate(self, raw: str | bytes) -> ProgressLine | None:
        try:
            message = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(message, dict):
            return None
        event, epoch = message.get("event"), message.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            epoch = None
        if event == "train_begin":
            return ProgressLine(0.0, "training started")
        if epoch is None:
            return None
        shown = f"epoch {epoch + 1}/{self.epochs}"
        if event == "epoch_begin":
            return ProgressLine(epoch / self.epochs, shown, {"epoch": epoch + 1})
        if event == "batch_end":
            self._steps += 1
            batch = message.get("batch")
            if not self.steps_per_epoch or not isinstance(batch, int):
                return None
            fraction = min((batch + 1) / self.steps_per_epoch, 1.0)
            metrics = {**_numbers(message.get("logs")), "epoch": epoch + 1, "step": self._steps}
            return ProgressLine((epoch + fraction) / self.epochs, shown, metrics)
        if event == "epoch_end":
            metrics = {**_numbers(message.get("logs")), "epoch": epoch + 1, "step": self._steps}
            loss = metrics.get("val/loss", metrics.get("loss"))
            text = f"{shown} done" + (f", val/loss={loss:.4g}" if loss is not None else "")
            return ProgressLine((epoch + 1) / self.epochs, text, metrics)
        return None


@attrs.define(eq=False)
class SleapZmqChannel:
    """Binds the progress SUB on ``publish_port`` and the controller PUB on ``controller_port``."""

    publish_port: int
    controller_port: int
    progress: ZmqProgress
    _context: Any = attrs.field(default=None, init=False)
    _sub: Any = attrs.field(default=None, init=False)
    _pub: Any = attrs.field(default=None, init=False)
    _stopper: asyncio.Task[None] | None = attrs.field(default=None, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    _reading: asyncio.Event | None = attrs.field(default=None, init=False)

    def saved(self) -> dict[str, Any]:
        """The ports the job connects to: a worker that adopts the job binds the same ones again."""
        return {"publish_port": self.publish_port, "controller_port": self.controller_port}

    def reopened(self, saved: Mapping[str, Any]) -> SleapZmqChannel:
        """This channel on the recorded ports (``ValueError`` if ``saved`` does not name two ports)."""
        ports = [saved.get(key) for key in ("publish_port", "controller_port")]
        if not all(isinstance(port, int) and 0 < port < 65536 for port in ports):
            raise ValueError(
                f"a sleap-nn channel record needs publish_port and controller_port, got {saved!r}"
            )
        return SleapZmqChannel(int(ports[0]), int(ports[1]), self.progress)  # type: ignore[arg-type]

    async def open(self) -> None:
        import zmq
        import zmq.asyncio

        self._context = zmq.asyncio.Context()
        try:
            self._sub = self._context.socket(zmq.SUB)
            self._sub.setsockopt(zmq.LINGER, 0)
            self._sub.subscribe("")
            self._sub.bind(f"tcp://127.0.0.1:{self.publish_port}")
            self._pub = self._context.socket(zmq.PUB)
            self._pub.setsockopt(zmq.LINGER, 0)
            self._pub.bind(f"tcp://127.0.0.1:{self.controller_port}")
        except Exception:  # a port taken meanwhile (an adoption re-binds recorded ports): free what was bound
            await self.close()
            raise

    async def events(self) -> AsyncIterator[ParsedLine]:
        """Messages until ``close``: what already arrived is still read then (the last epoch's metrics)."""
        done = self._reading = asyncio.Event()
        try:
            while self._sub is not None:
                if not await self._sub.poll(POLL_MS):
                    if self._closing:
                        return
                    continue
                item = self.progress.translate(await self._sub.recv_string())
                if item is not None:
                    yield item
        finally:
            done.set()

    async def stop_early(self) -> bool:
        """Send ``{"command": "stop"}``, repeated until the run ends (a message before it subscribed is lost)."""
        if self._pub is None:
            return False
        if self._stopper is None:
            self._stopper = asyncio.create_task(self._repeat_stop())
        return True

    async def _repeat_stop(self) -> None:
        while self._pub is not None:
            with contextlib.suppress(Exception):
                await self._pub.send_string(STOP_COMMAND)
            await asyncio.sleep(STOP_REPEAT_SECONDS)

    async def close(self) -> None:
        self._closing = True
        if self._reading is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_WAIT_SECONDS):
                    await self._reading.wait()
        if self._stopper is not None:
            self._stopper.cancel()
            with contextlib.suppress(BaseException):
                await self._stopper
        for sock in (self._sub, self._pub):
            if sock is not None:
                sock.close(linger=0)
        self._sub = self._pub = None
        if self._context is not None:
            self._context.term()
            self._context = None
