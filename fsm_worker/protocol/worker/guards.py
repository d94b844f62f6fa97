"""The guards of the worker table's rows that the coordinator owns: whom a peer message is about (the held
reservation, the current job, a retained one) and whether it may act on it (sender, key)."""

from __future__ import annotations

from fsm_worker.protocol.messages import JobCancel, JobRequest, RtcOffer
from fsm_worker.protocol.worker.actions import CoordinatorActions
from fsm_worker.protocol.worker.events import ChannelAnswered
from fsm_worker.protocol.worker.values import Stimulus, presents_key


class CoordinatorGuards(CoordinatorActions):
    """Guards named by `table.TRANSITIONS` (`conditions=` / `unless=`); they read the state, change nothing."""

    def compatible(self, s: Stimulus) -> bool:
        assert isinstance(s.message, JobRequest)
        return not self._refusals(s.message)

    def repeats_held_request(self, s: Stimulus) -> bool:
        held = self.reservation or self.current_job
        return held is not None and (held.job_id, held.client_id) == (s.job_id, s.sender)

    def for_reservation(self, s: Stimulus) -> bool:
        held = self.reservation
        return (
            held is not None
            and (held.job_id, held.client_id) == (s.job_id, s.sender)
            # Releasing a reservation needs no key: a client cancels its losing bids without telling the losers
            # the key (only assigning, which hands the job over, must present it).
            and (isinstance(s.message, JobCancel) or presents_key(held.request.job_key_sha256, s))
        )

    def for_retained_job(self, s: Stimulus) -> bool:
        retained = self._retained.get(s.job_id or "")
        return (
            retained is not None
            and retained.files_kept
            and retained.client_id == s.sender
            and presents_key(retained.key_sha256, s)
        )

    def for_known_job(self, s: Stimulus) -> bool:
        retained = self._retained.get(s.job_id or "")
        return self.for_current_job(s) or (
            retained is not None and retained.client_id == s.sender and presents_key(retained.key_sha256, s)
        )

    def for_channel_job(self, s: Stimulus) -> bool:
        assert isinstance(s.event, ChannelAnswered)
        owner = Stimulus(s.now, s.event, s.event.client_id, job_id=s.job_id)
        return self.for_current_job(owner) or self.for_retained_job(owner)

    def repeats_last_offer(self, s: Stimulus) -> bool:
        assert isinstance(s.message, RtcOffer)
        return self._offers.get(s.message.job_id) == s.message.sdp

    def about_current_job(self, s: Stimulus) -> bool:
        return self.current_job is not None and self.current_job.job_id == s.job_id
