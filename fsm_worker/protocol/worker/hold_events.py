"""The room-wide hold cap (issue 10 item 8), as the worker's core sees it: events and instructions.

The signaling server counts, per client, the jobs the room's workers hold for it (`hold` op,
docs/signaling.md). Before a worker answers a `job_request` it would take, its core claims a hold
(`ClaimHold`); it answers the client when the shell feeds the server's answer back (`HoldGranted` /
`HoldRefused`). When the job leaves the worker for any reason the core emits `ReleaseHold`, exactly once.
`HoldsOffered` is fed on every (re)connect: whether the server counts holds; with it the core re-claims what it
holds (`SyncHolds`, which replaces the worker's whole set at the server).
"""

from __future__ import annotations

import hashlib

import attrs


def hold_ref(job_id: str) -> str:
    """The opaque per-job reference a hold is claimed under (the server never learns the job id)."""
    return hashlib.sha256(b"fsm-worker-hold\x00" + job_id.encode()).hexdigest()[:32]


# --- events (into the core) ----------------------------------------------------------------------------------


@attrs.frozen
class HoldsOffered:
    """The signaling link is up; `enabled`: its server counts holds (it said so in `welcome`)."""

    enabled: bool


@attrs.frozen
class HoldGranted:
    """The server counted the hold of `job_id`."""

    job_id: str


@attrs.frozen
class HoldUnanswered:
    """The claim of `job_id` got no answer (`reason`: link down, no ack in time, a server without holds). The
    core takes the job anyway (row `hold_granted`: availability over strictness, docs/security.md)."""

    job_id: str
    reason: str


@attrs.frozen
class HoldRefused:
    """The server refused the hold: the client holds the room's cap (`message` names the setting)."""

    job_id: str
    message: str


# --- instructions (out of the core) --------------------------------------------------------------------------


@attrs.frozen
class ClaimHold:
    """Claim a hold for `client_id` on `job_id`; answer with `HoldGranted` or `HoldRefused`."""

    client_id: str
    job_id: str

    @property
    def job_ref(self) -> str:
        return hold_ref(self.job_id)


@attrs.frozen
class ReleaseHold:
    """The job left this worker: release its hold (no answer is fed back)."""

    client_id: str
    job_id: str

    @property
    def job_ref(self) -> str:
        return hold_ref(self.job_id)


@attrs.frozen
class SyncHolds:
    """Replace this worker's holds at the server with these (client id, job id) pairs (no answer fed back)."""

    holds: tuple[tuple[str, str], ...]
