"""`fsm-worker demo`: a signaling server, a worker and a client on loopback, one real training job end to end."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fsm_worker.client import JobClient, JobOutcome
from fsm_worker.host import WorkerConfig, WorkerHost
from fsm_worker.jobs.sample_data import generate_sample_csv
from fsm_worker.progress import JobProgress
from fsm_worker.signaling.config import ServerConfig
from fsm_worker.signaling.server import start_server


async def run_demo(workdir: Path, rows: int = 20_000, features: int = 8, epochs: int = 30) -> JobOutcome:
    """Run the whole protocol once on loopback and print what happened; return the job's outcome."""
    console = Console(stderr=False)
    timings: dict[str, float] = {}
    workdir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(16)

    mark = time.perf_counter()
    server = await start_server(ServerConfig(tokens=[token], host="127.0.0.1", port=0))
    worker = WorkerHost(
        WorkerConfig(server.url, token, "demo-worker", workdir=workdir / "worker", loopback_only=True, rtc_fast_path="loopback")
    )
    try:
        await worker.start()
        timings["start server + worker"] = time.perf_counter() - mark
        console.print(f"[bold]signaling server[/bold] {server.url} (token generated for this run)")
        console.print(f"[bold]worker[/bold] {worker.peer_id}: {worker.capabilities.gpu_model}, "
                      f"job types {', '.join(worker.capabilities.supported_job_types)}")  # fmt: skip

        mark = time.perf_counter()
        dataset = generate_sample_csv(workdir / "dataset.csv", rows=rows, features=features, seed=7)
        timings["generate dataset"] = time.perf_counter() - mark
        console.print(
            f"[bold]dataset[/bold] {dataset} ({rows:,} rows, {features} features, {dataset.stat().st_size:,} bytes)"
        )

        async with JobClient(server.url, token, "demo-client", loopback_only=True, rtc_fast_path="loopback") as client:
            workers = await client.discover_workers({"properties": {"status": "available"}})
            console.print(f"[bold]discovered[/bold] {len(workers)} available worker(s): "
                          f"{', '.join(w.peer_id for w in workers)}")  # fmt: skip
            config = {"epochs": epochs, "learning_rate": 0.1}
            with JobProgress(console) as progress:
                job = await client.submit("train-demo", config, [dataset], on_upload=progress.upload)
                async for event in job.events():
                    progress.event(event)
                outcome = await job.result(workdir / "results", on_download=progress.download)
    finally:
        await worker.shutdown()
        await server.stop()

    phases = {"reserve worker": outcome.phases.get("reserve", 0.0), "open data channel": outcome.phases.get("channel", 0.0),
              "upload inputs": outcome.phases.get("upload", 0.0),
              "training (on the worker)": outcome.training_duration_minutes * 60,
              "download results": outcome.phases.get("download", 0.0)}  # fmt: skip
    table = Table(title=f"job {outcome.job_id} on {outcome.worker_id}: completed")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    for name, seconds in {**timings, **phases}.items():
        table.add_row(name, f"{seconds:.3f}")
    console.print(table)
    model = next((path for path in outcome.files if path.suffix == ".npz"), None)
    console.print(f"[bold green]trained model:[/bold green] {model} ({outcome.model_size_mb} MB)")
    for path in outcome.files:
        console.print(f"  result file: {path}")
    return outcome
