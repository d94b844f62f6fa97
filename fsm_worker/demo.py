"""`fsm-worker demo`: a signaling server, a worker and a client on loopback, one real training job end to end."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console
from rich.table import Table

from fsm_worker.client import JobClient, JobOutcome
from fsm_worker.jobs.sample_data import generate_sample_csv
from fsm_worker.progress import JobProgress
from fsm_worker.protocol.messages import JobStatus, Message, RtcAnswer, RtcOffer, to_wire
from fsm_worker.server.app import start_server
from fsm_worker.server.config import ServerConfig
from fsm_worker.worker import WorkerConfig, WorkerHost


def _describe(message: Message) -> str:
    """One line for a protocol message, SDP bodies shortened."""
    wire = to_wire(message)
    if isinstance(message, RtcOffer | RtcAnswer):
        wire["sdp"] = f"<{len(message.sdp)} bytes of SDP>"
    wire.pop("app_message_type")
    return json.dumps(wire)


async def run_demo(workdir: Path, rows: int = 20_000, features: int = 8, epochs: int = 30) -> JobOutcome:
    """Run the whole protocol once on loopback, narrating it; return the job's outcome."""
    return await _run(
        workdir, DemoJob("train-demo", {"epochs": epochs, "learning_rate": 0.01}, rows, features)
    )


async def run_sleap_demo(workdir: Path, epochs: int = 3) -> JobOutcome:
    """The same with ``sleap-train``: a tiny real SLEAP model trained on a synthetic ``.pkg.slp``."""
    from fsm_worker.jobs.sleap import sleap_available

    if not sleap_available():
        raise SystemExit("fsm-worker demo --sleap needs the sleap extra: pip install 'fsm-worker[sleap]'")
    return await _run(workdir, DemoJob("sleap-train", {**TINY_SLEAP, "max_epochs": epochs}))


#: A single-instance UNet small enough to train in seconds on a CPU.
TINY_SLEAP = {"batch_size": 2, "steps_per_epoch": 5, "filters": 8, "filters_rate": 2.0, "max_stride": 8,
              "output_stride": 4, "learning_rate": 1e-3}  # fmt: skip


@attrs.frozen
class DemoJob:
    job_type: str
    config: dict[str, Any]
    rows: int = 0
    features: int = 0

    def dataset(self, workdir: Path) -> tuple[Path, str]:
        if self.job_type == "sleap-train":
            from fsm_worker.jobs.sleap.synthetic import make_labels

            path = make_labels(workdir / "tiny.pkg.slp")
            return path, f"20 synthetic labelled frames, {path.stat().st_size / 1e3:.0f} kB"
        path = generate_sample_csv(workdir / "dataset.csv", rows=self.rows, features=self.features, seed=7)
        return path, f"{self.rows:,} rows x {self.features} features, {path.stat().st_size / 1e6:.1f} MB"


async def _run(workdir: Path, demo: DemoJob) -> JobOutcome:
    console = Console(highlight=False)
    timings: dict[str, float] = {}
    workdir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)

    def trace(direction: str, peer: str, message: Message) -> None:
        if isinstance(message, JobStatus) and message.status == "running":
            return  # the training bar shows these
        arrow = (
            "[cyan]client → worker[/cyan]" if direction == "sent" else "[magenta]worker → client[/magenta]"
        )
        console.print(
            f"  {arrow} [bold]{message.TYPE}[/bold] {_describe(message)}", no_wrap=True, overflow="ellipsis"
        )

    console.rule("[bold]fsm_worker demo[/bold]: signaling server, worker and client on loopback")
    mark = time.perf_counter()
    server = await start_server(ServerConfig(tokens=[token], host="127.0.0.1", port=0))
    config = WorkerConfig(
        server.url,
        token,
        "demo-worker",
        workdir=workdir / "worker",
        loopback_only=True,
    )
    worker = WorkerHost(config)
    try:
        await worker.start()
        timings["start server + worker"] = time.perf_counter() - mark
        caps = worker.capabilities
        console.print(f"signaling server  {server.url} (room token generated for this run)")
        console.print(
            f"worker            {worker.peer_id}: {caps.gpu_model}, {caps.gpu_memory_mb} MB GPU memory, "
            f"job types: {', '.join(caps.supported_job_types)}"
        )

        mark = time.perf_counter()
        dataset, described = demo.dataset(workdir)
        timings["generate dataset"] = time.perf_counter() - mark
        console.print(f"dataset           {dataset} ({described})")

        async with JobClient(server.url, token, "demo-client", loopback_only=True, trace=trace) as client:
            workers = await client.discover_workers({"properties": {"status": "available"}})
            console.print(
                f"discovery         {len(workers)} available worker(s): {', '.join(w.peer_id for w in workers)}"
            )
            console.print("\n[bold]protocol[/bold] (peer messages through the signaling server)")
            job = await client.submit(demo.job_type, demo.config, [dataset])
            console.print(
                f"  data channel open, {len(job.uploaded)} input file(s) uploaded and verified (sha256)\n"
            )
            with JobProgress(console) as progress:
                async for event in job.events():
                    progress.event(event)
                outcome = await job.result(workdir / "results", on_download=progress.download)
    finally:
        await worker.shutdown()
        await server.stop()
    _summary(console, outcome, timings)
    return outcome


def _summary(console: Console, outcome: JobOutcome, timings: dict[str, float]) -> None:
    phases = {
        **timings,
        "reserve a worker (request → assignment)": outcome.phases.get("reserve", 0.0),
        "open the data channel (offer → open)": outcome.phases.get("channel", 0.0),
        "upload inputs": outcome.phases.get("upload", 0.0),
        "training (on the worker)": outcome.training_duration_minutes * 60,
        "download results": outcome.phases.get("download", 0.0),
    }
    table = Table(title=f"job {outcome.job_id} completed on {outcome.worker_id}")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    for name, seconds in phases.items():
        table.add_row(name, f"{seconds:.3f}")
    console.print(table)
    model = next((path for path in outcome.files if path.suffix in (".npz", ".ckpt")), None)
    metrics_file = next((path for path in outcome.files if path.name == "metrics.json"), None)
    if metrics_file is not None:
        final = json.loads(metrics_file.read_text()).get("final", {})
        if final:
            console.print(
                f"validation accuracy {final.get('val_accuracy', 0):.3f}, loss {final.get('val_loss', 0):.3f}"
            )
    console.print(f"[bold green]trained model:[/bold green] {model} ({outcome.model_size_mb} MB)")
    for path in outcome.files:
        console.print(f"  result file: {path}")
