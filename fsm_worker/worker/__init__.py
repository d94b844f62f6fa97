"""The worker side: the `WorkerHost` a GPU machine embeds, its configuration, GPU detection and IO shells."""

from fsm_worker.worker.config import WorkerConfig
from fsm_worker.worker.host import WorkerHost

__all__ = ["WorkerConfig", "WorkerHost"]
