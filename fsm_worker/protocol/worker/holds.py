"""The room-wide hold cap in the worker's core (issue 10 item 8): the guards and actions of the hold rows.

A `job_request` the worker would take (a free slot, or a place in the queue it asked for) is not answered at
once when the server counts holds: the core keeps the request as a pending claim, emits `ClaimHold`, and the
server's answer (`HoldGranted` / `HoldRefused`, fed by the shell) drives the `hold_granted` / `hold_refused`
rows: reserve or queue it then, or refuse it `room_cap` (nothing reserved). A job that got a hold carries its
client in `JobRecord.hold_client`; the coordinator emits `ReleaseHold` when the job's record leaves the worker
(`_settle`), so every granted hold is released exactly once, whatever ended the job. Pending claims dropped
before their answer (a drain, a restore) are released at once (the server's release is idempotent).
"""

from __future__ import annotations

import logging

from fsm_worker.protocol.messages import JobCancelled, JobRequest
from fsm_worker.protocol.worker.hold_events import (
    ClaimHold,
    HoldGranted,
    HoldRefused,
    HoldsOffered,
    HoldUnanswered,
    ReleaseHold,
    SyncHolds,
)
from fsm_worker.protocol.worker.instructions import Instruction
from fsm_worker.protocol.worker.placement import JobRecord, SlotActions
from fsm_worker.protocol.worker.values import Stimulus

log = logging.getLogger("fsm_worker.protocol.worker.coordinator")

__all__ = ["HoldActions", "hold_instructions"]


class HoldActions(SlotActions):
    """Guards and actions of the rows about the room's hold cap; `JobCoordinator` supplies the state."""

    #: Whether the server counts holds (the last `HoldsOffered`).
    holds_on: bool
    #: Pending claims: job id → the `job_request` stimulus that waits for the server's answer.
    _claims: dict[str, Stimulus]
    _jobs: dict[str, JobRecord]

    def _init_holds(self) -> None:
        self.holds_on, self._claims = False, {}

    # --- guards -----------------------------------------------------------------------------------------------

    def claim_pending(self, s: Stimulus) -> bool:
        """The same client's request for this job already waits for its hold."""
        claim = self._claims.get(s.job_id or "")
        return claim is not None and claim.sender == s.sender

    def job_id_claimed(self, s: Stimulus) -> bool:
        return (s.job_id or "") in self._claims

    def needs_hold(self, s: Stimulus) -> bool:
        return self.holds_on

    def claims_saturate(self, s: Stimulus) -> bool:
        """As many claims are out as the worker could take jobs (slots and queue places): refuse the rest."""
        room = len(self.sched.slots.slots) + self.sched.queue.capacity
        return len(self._claims) >= room

    def would_accept(self, s: Stimulus) -> bool:
        """Without the hold, the request would be reserved (a free slot) or queued (it asked, the queue takes it)."""
        return self.slot_free(s) or (self.wants_queue(s) and not self.queue_refuses(s))

    def claim_answered(self, s: Stimulus) -> bool:
        """A hold answer for a pending claim (routing put the claim's request in the stimulus)."""
        return isinstance(s.message, JobRequest) and (s.job_id or "") in self._claims

    # --- actions ----------------------------------------------------------------------------------------------

    def claim_hold(self, s: Stimulus) -> None:
        assert s.sender is not None and s.job_id is not None
        self._claims[s.job_id] = s
        log.info("job %s from %s: claiming a room hold before answering", s.job_id, s.sender)
        self._out.append(ClaimHold(s.sender, s.job_id))

    def await_hold(self, s: Stimulus) -> None:
        log.info("job %s: repeated job_request while its hold is claimed; the answer follows", s.job_id)

    def accept_held_request(self, s: Stimulus) -> None:
        self._take_claim(s)
        self.accept_request(s)

    def accept_held_queued(self, s: Stimulus) -> None:
        self._take_claim(s)
        self.accept_queued(s)

    def busy_after_claim(self, s: Stimulus) -> None:
        """The slot or queue place went to another request while the claim was out: busy, hold released."""
        claim = self._claims.pop(s.job_id or "")
        assert claim.sender is not None and claim.job_id is not None
        self._out.append(ReleaseHold(claim.sender, claim.job_id))
        self.reject_busy(s)

    def reject_room_cap(self, s: Stimulus) -> None:
        assert isinstance(s.event, HoldRefused)
        self._claims.pop(s.job_id or "")
        log.info("job %s from %s refused: room hold cap (%s)", s.job_id, s.sender, s.event.message)
        self._reply_rejected(s, "room_cap", [s.event.message])

    def cancel_claim(self, s: Stimulus) -> None:
        """The client released its bid before the hold was answered (it lost elsewhere): drop the claim."""
        assert s.sender is not None and s.job_id is not None
        del self._claims[s.job_id]
        self._out.append(ReleaseHold(s.sender, s.job_id))
        self._send(s.sender, JobCancelled(s.job_id))
        log.info("job %s: cancelled by its client while its hold was claimed", s.job_id)

    def ignore_hold_answer(self, s: Stimulus) -> None:
        log.debug("hold answer for %s ignored: no claim of it is pending", s.job_id)

    def sync_holds(self, s: Stimulus) -> None:
        """The link is (back) up: note whether holds count, and re-claim every job held here (and every claim
        still out: the sync replaces the worker's whole set at the server)."""
        assert isinstance(s.event, HoldsOffered)
        self.holds_on = s.event.enabled
        if not self.holds_on:
            return
        holds = [(claim.sender, job_id) for job_id, claim in self._claims.items() if claim.sender is not None]
        for job_id, record in self._jobs.items():
            held = record.reservation or record.current_job
            if held is not None:
                record.hold_client = held.client_id
                holds.append((held.client_id, job_id))
        self._out.append(SyncHolds(tuple(holds)))

    # --- helpers ----------------------------------------------------------------------------------------------

    def _take_claim(self, s: Stimulus) -> None:
        self._claims.pop(s.job_id or "")
        assert s.sender is not None
        self._focus.hold_client = s.sender
        if isinstance(s.event, HoldUnanswered):
            log.warning(
                "job %s: the hold claim was not answered (%s); taken anyway", s.job_id, s.event.reason
            )

    def _drop_claims(self, s: Stimulus, reason: str, details: str) -> None:
        """Answer every pending claim `reason` and release its hold (a drain; a restore of the old process's)."""
        for job_id, claim in list(self._claims.items()):
            del self._claims[job_id]
            assert claim.sender is not None
            self._out.append(ReleaseHold(claim.sender, job_id))
            self._reply_rejected(claim, reason, [details])

    def _release_hold(self, record: JobRecord) -> None:
        """The job's record left the worker: its hold ends."""
        if record.hold_client is not None and record.job_id is not None:
            self._out.append(ReleaseHold(record.hold_client, record.job_id))
            record.hold_client = None

    def _hold_stimulus(self, event: HoldGranted | HoldRefused | HoldUnanswered, now: float) -> Stimulus:
        """The stimulus of a hold answer: with its pending claim's sender and request, if any."""
        claim = self._claims.get(event.job_id)
        if claim is None:
            return Stimulus(now, event, job_id=event.job_id)
        return Stimulus(now, event, claim.sender, claim.message, event.job_id)


def hold_instructions(out: list[Instruction]) -> list[Instruction]:
    """The hold instructions among `out` (for tests and logs)."""
    return [i for i in out if isinstance(i, ClaimHold | ReleaseHold | SyncHolds)]
