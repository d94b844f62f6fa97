"""The client's job protocol as a pure core (bidding, seq tracking and replay, liveness, the outcome)."""

from fsm_worker.protocol.client.events import ClientJobState, ClientTimeouts, Outcome
from fsm_worker.protocol.client.job import ClientJobCore, job_key_sha256
from fsm_worker.protocol.client.table import TRANSITIONS

__all__ = ["TRANSITIONS", "ClientJobCore", "ClientJobState", "ClientTimeouts", "Outcome", "job_key_sha256"]
