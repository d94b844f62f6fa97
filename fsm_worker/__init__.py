"""fsm_worker: a remote job worker built around an explicit state machine."""

__version__ = "0.1.0"
