"""Re-export: the counters are kept by the pure cores (``fsm_worker.protocol.transfer.stats``)."""

from fsm_worker.protocol.transfer.stats import TransferStats

__all__ = ["TransferStats"]
