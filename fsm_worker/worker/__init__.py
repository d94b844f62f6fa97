"""The worker side: the `WorkerHost` a GPU machine embeds, its configuration and capabilities."""

from fsm_worker.worker.host import WorkerConfig, WorkerHost

__all__ = ["WorkerConfig", "WorkerHost"]
