"""Rich progress bars for a job: upload, training (progress and the job's latest message), download."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.filesize import decimal
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn

from fsm_worker.protocol.messages import JobEvent, JobStatus, Metrics


class JobProgress:
    """Bars driven by the client's callbacks (`upload`, `event`, `download`); use as a context manager."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description:<9}"),
            BarColumn(bar_width=30),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> JobProgress:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def _update(self, name: str, completed: float, total: float, info: str) -> None:
        if name not in self._tasks:
            self._tasks[name] = self._progress.add_task(name, total=total, info=info)
        self._progress.update(self._tasks[name], completed=completed, total=total, info=info)

    def upload(self, done: int, total: int) -> None:
        self._update("upload", done if total else 1, total or 1, f"{decimal(done)} / {decimal(total)}")

    def queued(self, position: int | None, estimated_start_seconds: float | None) -> None:
        """The job waits in its worker's queue: the training line shows where and for how long."""
        self._update("training", 0.0, 1.0, format_queued(position, estimated_start_seconds))

    def event(self, event: JobEvent) -> None:
        metrics = format_metrics(getattr(event, "metrics", None))
        if isinstance(event, JobStatus) and event.status == "queued":
            self.queued(event.queue_position, event.estimated_start_seconds)
        elif isinstance(event, JobStatus):
            info = " ".join(part for part in (metrics, event.message[: 70 - len(metrics)]) if part)
            self._update("training", event.progress, 1.0, info)
        else:
            self._update("training", 1.0, 1.0, " ".join(part for part in (event.TYPE, metrics) if part))

    def download(self, done: int, total: int) -> None:
        self._update("download", done if total else 1, total or 1, f"{decimal(done)} / {decimal(total)}")


def format_queued(position: int | None, estimated_start_seconds: float | None) -> str:
    """`queued: position 2, starts in ~40 s` (the parts the worker reported)."""
    text = "queued" + (f": position {position}" if position is not None else "")
    if estimated_start_seconds is not None:
        text += f", starts in ~{estimated_start_seconds:.0f} s"
    return text


def format_metrics(metrics: Metrics | None) -> str:
    """`epoch 3 loss 0.1234 val_loss 0.2345` from the metrics an event carries ("" without any)."""
    if metrics is None:
        return ""
    parts = [f"epoch {metrics.epoch}"] if metrics.epoch is not None else []
    for name in ("loss", "val_loss"):
        value = getattr(metrics, name)
        if value is not None:
            parts.append(f"{name} {value:.4g}")
    return " ".join(parts)
