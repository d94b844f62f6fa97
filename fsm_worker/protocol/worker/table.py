"""The worker's job protocol as one table: every change of status and of the run's sub-state is a row.

Each row reads: on `trigger`, from `source`, if every guard holds (`when`) and none of `unless` does, go to
`dest` (`STAY`: the state does not change) and run `action`. Rows for one trigger are tried in order, and every
trigger ends in a catch-all row, so each (state, event) pair has exactly one outcome. The guards and actions
are methods of `JobCoordinator` (`coordinator.py`).

Issue 12: the table is one job's machine. Every job the worker holds (reserved, queued or in a slot) has its
own state in it; an event about a job drives that job's machine, and a request for a new job starts from
`available` (a machine that holds nothing). The worker's advertised status is derived from its slots, and
published (before the messages that follow) whenever the slots or the queue change.

The states nest by name (`busy.running` is `running` inside `busy`, see `WorkerState`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fsm_worker.protocol.worker.states import Intake, WorkerState

AVAILABLE, RESERVED = WorkerState.AVAILABLE, WorkerState.RESERVED
AWAITING_INPUTS, STARTING, RUNNING = WorkerState.AWAITING_INPUTS, WorkerState.STARTING, WorkerState.RUNNING
STOPPING_FOR_CANCEL = WorkerState.STOPPING_FOR_CANCEL
STOPPING_FOR_SHUTDOWN = WorkerState.STOPPING_FOR_SHUTDOWN
STOPPING_EARLY = WorkerState.STOPPING_EARLY
STOPPING = [STOPPING_FOR_CANCEL, STOPPING_FOR_SHUTDOWN, STOPPING_EARLY]
RUN = [STARTING, RUNNING]  # a run that is going and may be stopped
QUEUED, QUEUED_ASSIGNED = WorkerState.QUEUED, WorkerState.QUEUED_ASSIGNED
BUSY = [AWAITING_INPUTS, *RUN, *STOPPING]
ASSIGNED = [QUEUED_ASSIGNED, *BUSY]  # the client assigned the job (it may offer a channel, upload inputs)
HELD = [RESERVED, QUEUED, *ASSIGNED]
ANY = "*"
STAY = None

RUN_EVENTS = ("run_started", "run_progress", "run_succeeded", "run_failed", "run_stopped")

Source = WorkerState | Sequence[WorkerState] | str


def _sources(source: Source) -> list[WorkerState]:
    if source == ANY:
        return list(WorkerState)
    return [source] if isinstance(source, WorkerState) else list(source)  # type: ignore[arg-type]


def _row(
    trigger: str,
    source: Source,
    dest: WorkerState | None,
    action: str,
    when: Sequence[str] = (),
    unless: Sequence[str] = (),
) -> dict[str, Any]:
    """One row of the table, as a `transitions` transition."""
    return {
        "trigger": trigger,
        "source": source if source == ANY or isinstance(source, WorkerState) else list(source),
        "dest": dest,
        "conditions": list(when),
        "unless": list(unless),
        "after": [action],
    }


def _intake(
    trigger: str, source: Intake, dest: Intake | None, action: str, when: Sequence[str] = ()
) -> dict[str, Any]:
    """One row of the intake table (one source state per row)."""
    return {"trigger": trigger, "source": source, "dest": dest, "conditions": list(when), "after": [action]}


# fmt: off
TRANSITIONS: list[dict[str, Any]] = [
    # trigger              source                  dest                   action                    guards
    # -- a client asks the worker to take a job: a free slot reserves it; else busy, unless it asked to queue
    #    (or asks more slots than the worker has at all: incompatible)
    _row("job_request",     AVAILABLE,              STAY,                  "await_hold",             when=["claim_pending"]),
    _row("job_request",     AVAILABLE,              STAY,                  "reject_busy",            when=["job_id_claimed"]),
    _row("job_request",     AVAILABLE,              STAY,                  "reject_busy",            unless=["slot_free", "wants_queue", "never_fits"]),
    _row("job_request",     AVAILABLE,              STAY,                  "reject_draining",        when=["is_draining"]),
    _row("job_request",     AVAILABLE,              STAY,                  "reject_incompatible",    unless=["compatible"]),
    #    when the server counts holds (issue 10 item 8, holds.py), a request it would take first claims one
    _row("job_request",     AVAILABLE,              STAY,                  "reject_busy",            when=["needs_hold", "claims_saturate"]),
    _row("job_request",     AVAILABLE,              STAY,                  "claim_hold",             when=["needs_hold", "would_accept"]),
    _row("job_request",     AVAILABLE,              RESERVED,              "accept_request",         when=["slot_free"]),
    _row("job_request",     AVAILABLE,              STAY,                  "reject_queue_refusal",   when=["queue_refuses"]),
    _row("job_request",     AVAILABLE,              QUEUED,                "accept_queued"),
    _row("job_request",     HELD,                   STAY,                  "accept_again",           when=["repeats_held_request"]),
    _row("job_request",     ANY,                    STAY,                  "reject_busy"),
    # -- the server answers a hold claim: reserve or queue the request then (if its slot or place is still
    #    there), or refuse it: the client holds the room's cap. The link (re)connects: re-claim what is held.
    _row("hold_granted",    AVAILABLE,              RESERVED,              "accept_held_request",    when=["claim_answered", "slot_free"]),
    _row("hold_granted",    AVAILABLE,              QUEUED,                "accept_held_queued",     when=["claim_answered", "wants_queue"], unless=["queue_refuses"]),
    _row("hold_granted",    AVAILABLE,              STAY,                  "busy_after_claim",       when=["claim_answered"]),
    _row("hold_granted",    ANY,                    STAY,                  "ignore_hold_answer"),
    _row("hold_refused",    AVAILABLE,              STAY,                  "reject_room_cap",        when=["claim_answered"]),
    _row("hold_refused",    ANY,                    STAY,                  "ignore_hold_answer"),
    _row("holds_offered",   ANY,                    STAY,                  "sync_holds"),
    # -- the client that holds the reservation assigns the job (a queued one waits for its slot assigned)
    _row("job_assignment",  RESERVED,               AWAITING_INPUTS,       "assign",                 when=["for_reservation"]),
    _row("job_assignment",  QUEUED,                 QUEUED_ASSIGNED,       "assign",                 when=["for_reservation"]),
    _row("job_assignment",  ASSIGNED,               STAY,                  "ignore_duplicate",       when=["for_current_job"]),
    _row("job_assignment",  ANY,                    STAY,                  "refuse_assignment"),
    # -- a slot frees: the queue's head takes it (fired by the core, FIFO)
    _row("slot_granted",    QUEUED,                 RESERVED,              "reserve_slot"),
    _row("slot_granted",    QUEUED_ASSIGNED,        STARTING,              "start_run",              when=["inputs_committed"]),
    _row("slot_granted",    QUEUED_ASSIGNED,        AWAITING_INPUTS,       "take_slot"),
    _row("queue_moved",     [QUEUED, QUEUED_ASSIGNED], STAY,               "report_position"),
    # -- the job's own client cancels it: a run in progress is stopped first; a cancel beats any other stop
    _row("job_cancel",      [RESERVED, QUEUED],     AVAILABLE,             "cancel_reservation",     when=["for_reservation"]),
    _row("job_cancel",      [QUEUED_ASSIGNED, AWAITING_INPUTS], AVAILABLE, "acknowledge_cancel",     when=["for_current_job"]),
    _row("job_cancel",      [*RUN, STOPPING_EARLY], STOPPING_FOR_CANCEL,   "stop_run",               when=["for_current_job"]),
    _row("job_cancel",      STOPPING_FOR_SHUTDOWN,  STOPPING_FOR_CANCEL,   "note_cancel",            when=["for_current_job"]),
    _row("job_cancel",      STOPPING_FOR_CANCEL,    STAY,                  "note_cancel",            when=["for_current_job"]),
    _row("job_cancel",      AVAILABLE,              STAY,                  "cancel_claim",           when=["claim_pending"]),
    _row("job_cancel",      ANY,                    STAY,                  "ignore_cancel"),
    # -- the job's own client stops a running job early: it ends as completed and keeps its outputs
    _row("job_stop",        RUNNING,                STOPPING_EARLY,        "stop_early",             when=["for_current_job"]),
    _row("job_stop",        ANY,                    STAY,                  "ignore_stop"),
    # -- the data channel (one per job: a new offer replaces the old channel; a repeated one is ignored)
    _row("rtc_offer",       ASSIGNED,               STAY,                  "ignore_repeated_offer",  when=["for_current_job", "repeats_last_offer"]),
    _row("rtc_offer",       ASSIGNED,               STAY,                  "accept_offer",           when=["for_current_job"]),
    _row("rtc_offer",       ANY,                    STAY,                  "ignore_repeated_offer",  when=["for_retained_job", "repeats_last_offer"]),
    _row("rtc_offer",       ANY,                    STAY,                  "accept_offer",           when=["for_retained_job"]),
    _row("rtc_offer",       ANY,                    STAY,                  "refuse_offer"),
    _row("channel_answered", ANY,                   STAY,                  "send_answer",            when=["for_channel_job"]),
    _row("channel_answered", ANY,                   STAY,                  "ignore_channel_event"),
    _row("channel_opened",  ANY,                    STAY,                  "note_channel_open"),
    _row("channel_failed",  ANY,                    STAY,                  "report_channel_failure"),
    _row("channel_closed",  ANY,                    STAY,                  "note_channel_closed"),
    _row("job_files_removed", ANY,                  STAY,                  "note_files_removed"),
    _row("restored",        ANY,                    STAY,                  "report_channels_lost"),
    _row("started",         ANY,                    STAY,                  "keep_held_job_dirs"),
    # -- replay of job events after a reconnect; a queued job's client keeps its place alive with it
    _row("job_sync",        [QUEUED, QUEUED_ASSIGNED], STAY,               "keep_queued_alive",      when=["for_queued_job"]),
    _row("job_sync",        ANY,                    STAY,                  "replay_events",          when=["for_known_job"]),
    _row("job_sync",        ANY,                    STAY,                  "refuse_sync"),
    # -- the run, as the job runner reports it (inputs may arrive while the job is queued)
    _row("inputs_started",  [QUEUED_ASSIGNED, AWAITING_INPUTS], STAY,      "note_inputs_started",    when=["about_current_job"]),
    _row("inputs_started",  ANY,                    STAY,                  "ignore_stale_run_event"),
    _row("inputs_ready",    QUEUED_ASSIGNED,        STAY,                  "note_inputs_committed",  when=["about_current_job"]),
    _row("inputs_ready",    AWAITING_INPUTS,        STARTING,              "start_run",              when=["about_current_job"]),
    _row("run_started",     STARTING,               RUNNING,               "report_starting",        when=["about_current_job"]),
    _row("run_progress",    RUNNING,                STAY,                  "report_progress",        when=["about_current_job"]),
    _row("run_succeeded",   RUN,                    AVAILABLE,             "report_complete",        when=["about_current_job"]),
    _row("run_failed",      [*RUN, STOPPING_EARLY], AVAILABLE,             "report_failed",          when=["about_current_job"]),
    *[_row(name,            STOPPING_EARLY,         AVAILABLE,             "report_stopped_early",   when=["about_current_job"]) for name in ("run_succeeded", "run_stopped")],
    *[_row(name,            STOPPING_FOR_CANCEL,    AVAILABLE,             "acknowledge_cancel",     when=["about_current_job"]) for name in RUN_EVENTS[2:]],
    *[_row(name,            STOPPING_FOR_SHUTDOWN,  AVAILABLE,             "fail_stopped_for_shutdown", when=["about_current_job"]) for name in RUN_EVENTS[2:]],
    *[_row(name,            ANY,                    STAY,                  "ignore_stale_run_event") for name in ("inputs_ready", *RUN_EVENTS)],
    # -- deadlines (each job's own: its reservation, its inputs, its place in the queue)
    _row("lease_expired",   RESERVED,               AVAILABLE,             "expire_reservation"),
    _row("first_input_overdue", AWAITING_INPUTS,    AVAILABLE,             "fail_first_input_overdue"),
    _row("inputs_overdue",  AWAITING_INPUTS,        AVAILABLE,             "fail_awaiting_inputs"),
    _row("queue_lease_expired", QUEUED,             AVAILABLE,             "expire_queued"),
    _row("queue_lease_expired", QUEUED_ASSIGNED,    AVAILABLE,             "fail_queue_lease"),
    # -- graceful shutdown (`INTAKE` below first stops new jobs): a job that has not started fails; a running one
    #    finishes unless told to stop
    _row("drain",           [RESERVED, QUEUED],     AVAILABLE,             "release_reservation"),
    _row("drain",           [QUEUED_ASSIGNED, AWAITING_INPUTS], AVAILABLE, "fail_for_shutdown"),
    _row("drain",           RUN,                    STOPPING_FOR_SHUTDOWN, "stop_for_shutdown",      when=["cancel_running"]),
    _row("drain",           STOPPING_EARLY,         STAY,                  "stop_now",               when=["cancel_running"]),
    _row("drain",           [*RUN, STOPPING_EARLY], STAY,                  "wait_for_run"),
    _row("drain",           ANY,                    STAY,                  "nothing_to_release"),
]

#: The second table, beside the status: whether new jobs are taken, and the drain's progress. `drain` goes
#: through it first; the core fires `drain_settled` after every event while draining (drained once nothing is
#: held) and `drain_overdue` at the drain's deadline (`shutdown_timeout`: stop the jobs left; then
#: `kill_grace` + `DRAIN_MARGIN`: give up waiting for them).
INTAKE: list[dict[str, Any]] = [
    # trigger                source                     dest                       action                guards
    _intake("drain",         Intake.OPEN,               Intake.DRAINING,           "start_draining"),
    _intake("drain",         Intake.DRAINING,           STAY,                      "already_draining"),
    _intake("drain",         Intake.OVERDUE,            STAY,                      "already_draining"),
    _intake("drain",         Intake.DRAINED,            STAY,                      "already_drained"),
    _intake("drain_settled", Intake.DRAINING,           Intake.DRAINED,            "report_drained",     when=["holds_nothing"]),
    _intake("drain_settled", Intake.DRAINING,           STAY,                      "keep_draining"),
    _intake("drain_settled", Intake.OVERDUE,            Intake.DRAINED,            "report_drained",     when=["holds_nothing"]),
    _intake("drain_settled", Intake.OVERDUE,            STAY,                      "keep_draining"),
    _intake("drain_settled", Intake.DRAINED,            STAY,                      "already_drained"),
    _intake("drain_overdue", Intake.DRAINING,           Intake.OVERDUE,            "stop_what_is_left"),
    _intake("drain_overdue", Intake.OVERDUE,            Intake.DRAINED,            "give_up_waiting"),
    # a process started on a journal whose worker was killed mid-drain: its operator started it to take jobs
    _intake("started",       Intake.OPEN,               STAY,                      "already_open"),
    _intake("started",       Intake.DRAINING,           Intake.OPEN,               "reopen_intake"),
    _intake("started",       Intake.OVERDUE,            Intake.OPEN,               "reopen_intake"),
    _intake("started",       Intake.DRAINED,            Intake.OPEN,               "reopen_intake"),
]
# fmt: on

#: Triggers the core fires itself, only when due (no catch-all row): deadlines, and the queue moving on.
TIMED_TRIGGERS = ("lease_expired", "first_input_overdue", "inputs_overdue", "queue_lease_expired",
                  "slot_granted", "queue_moved")  # fmt: skip
#: Intake triggers the core fires itself (never from `open`): after each event while draining, at its deadline.
INTAKE_TIMED_TRIGGERS = ("drain_settled", "drain_overdue")
