"""The wire contract: parsing, errors that name the field, and exact JSON shapes back."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsm_worker.protocol.messages import (
    MESSAGE_TYPES,
    AppError,
    JobAssignment,
    JobCancel,
    JobCancelled,
    JobComplete,
    JobError,
    JobFailed,
    JobHead,
    JobRequest,
    JobResponse,
    JobResult,
    JobStatus,
    JobStop,
    JobSync,
    MessageError,
    Metrics,
    Requirements,
    ReservationExpired,
    RtcAnswer,
    UnknownMessage,
    parse_message,
    to_wire,
)

WIRE_SHAPES: list[tuple[Any, dict[str, Any]]] = [
    (
        JobRequest("j", "train-demo", {"epochs": 3}, Requirements(4096), {"rows": 10}),
        {
            "app_message_type": "job_request",
            "job_id": "j",
            "job_type": "train-demo",
            "config": {"epochs": 3},
            "requirements": {"min_gpu_memory_mb": 4096},
            "dataset_info": {"rows": 10},
        },
    ),
    (JobAssignment("j"), {"app_message_type": "job_assignment", "job_id": "j"}),
    (JobCancel("j"), {"app_message_type": "job_cancel", "job_id": "j"}),
    (
        JobResponse("j", True, 2.5),
        {
            "app_message_type": "job_response",
            "job_id": "j",
            "accepted": True,
            "estimated_duration_minutes": 2.5,
        },
    ),
    (
        JobResponse("j", False, reason="busy"),
        {"app_message_type": "job_response", "job_id": "j", "accepted": False, "reason": "busy"},
    ),
    (
        JobCancelled("j"),
        {"app_message_type": "job_cancelled", "job_id": "j", "status": "cancelled", "cleanup_complete": True},
    ),
    (ReservationExpired("j"), {"app_message_type": "reservation_expired", "job_id": "j"}),
    (JobHead("j", 7, 3), {"app_message_type": "job_head", "job_id": "j", "last_seq": 7, "upto_seq": 3}),
    (
        JobSync("j", 3, upto_seq=3),
        {"app_message_type": "job_sync", "job_id": "j", "after_seq": 3, "upto_seq": 3},
    ),
    (
        JobStatus("j", "running", 0.5, "epoch 1", 2),
        {
            "app_message_type": "job_status",
            "job_id": "j",
            "status": "running",
            "progress": 0.5,
            "message": "epoch 1",
            "seq": 2,
        },
    ),
    (
        JobComplete("j", JobResult(1.5, None), 3),
        {
            "app_message_type": "job_complete",
            "job_id": "j",
            "status": "completed",
            "progress": 1.0,
            "result": {"training_duration_minutes": 1.5, "model_size_mb": None},
            "seq": 3,
        },
    ),
    (
        JobFailed("j", JobError("TIMEOUT", "too slow", True), 4),
        {
            "app_message_type": "job_failed",
            "job_id": "j",
            "status": "failed",
            "error": {"code": "TIMEOUT", "message": "too slow", "recoverable": True},
            "seq": 4,
        },
    ),
    (
        AppError("INVALID_MESSAGE", "job_id: missing"),
        {
            "app_message_type": "app_error",
            "code": "INVALID_MESSAGE",
            "message": "job_id: missing",
            "job_id": None,
        },
    ),
    (RtcAnswer("j", "v=0"), {"app_message_type": "rtc_answer", "job_id": "j", "sdp": "v=0", "options": {}}),
    (
        JobStop("j", job_key="k" * 32),
        {"app_message_type": "job_stop", "job_id": "j", "job_key": "k" * 32},
    ),
    (
        JobStatus(
            "j", "running", 0.5, "epoch 1", seq=3, metrics=Metrics(epoch=1, loss=0.25, extra={"pck": 0.9})
        ),
        {
            "app_message_type": "job_status",
            "job_id": "j",
            "status": "running",
            "progress": 0.5,
            "message": "epoch 1",
            "seq": 3,
            "metrics": {"epoch": 1, "loss": 0.25, "extra": {"pck": 0.9}},
        },
    ),
]


@pytest.mark.parametrize(("message", "wire"), WIRE_SHAPES)
def test_messages_serialise_to_the_documented_shape_and_back(message: Any, wire: dict[str, Any]) -> None:
    assert to_wire(message) == wire
    assert json.loads(json.dumps(to_wire(message))) == wire
    assert parse_message(wire) == message


def test_every_message_type_has_a_documented_shape() -> None:
    documented = {wire["app_message_type"] for _, wire in WIRE_SHAPES}
    assert documented | {"job_sync", "rtc_offer"} == set(MESSAGE_TYPES)


def test_unknown_type_is_its_own_outcome() -> None:
    assert parse_message({"app_message_type": "teleport", "x": 1}) == UnknownMessage(
        "teleport", {"app_message_type": "teleport", "x": 1}
    )


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        (None, "payload", "expected an object, got NoneType"),
        ({"app_message_type": 3}, "app_message_type", "missing or not a string"),
        ({"app_message_type": "job_cancel"}, "job_id", "required field missing"),
        ({"app_message_type": "job_cancel", "job_id": True}, "job_id", "expected str, got bool"),
        (
            {"app_message_type": "job_cancel", "job_id": "x" * 200},
            "job_id",
            "must be 1-128 printable characters",
        ),
        (
            {
                "app_message_type": "job_request",
                "job_id": "j",
                "job_type": "t",
                "requirements": {"min_gpu_memory_mb": 1.5},
            },
            "requirements.min_gpu_memory_mb",
            "expected int, got float",
        ),
        (
            {
                "app_message_type": "job_status",
                "job_id": "j",
                "status": "running",
                "progress": 2,
                "message": "",
            },
            "progress",
            "must be between 0 and 1",
        ),
        (
            {"app_message_type": "job_failed", "job_id": "j", "error": {"code": "X", "message": "m"}},
            "error.recoverable",
            "required field missing",
        ),
    ],
)
def test_protocol_errors_name_the_field(payload: object, field: str, reason: str) -> None:
    with pytest.raises(MessageError) as caught:
        parse_message(payload)
    assert (caught.value.field, caught.value.message) == (field, reason)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@given(
    kind=st.sampled_from(sorted(MESSAGE_TYPES)),
    body=st.dictionaries(st.text(max_size=12), json_values, max_size=6),
)
def test_parse_never_raises_anything_but_protocol_error(kind: str, body: dict[str, Any]) -> None:
    try:
        message = parse_message({**body, "app_message_type": kind})
    except MessageError as error:
        assert error.field
    else:
        assert not isinstance(message, UnknownMessage), "a known type parses as itself"
        assert to_wire(message)["app_message_type"] == kind


def test_issue_12_fields_are_left_out_at_their_defaults_so_old_peers_see_todays_bytes() -> None:
    plain = to_wire(JobRequest("j", "train-demo"))
    assert plain["requirements"] == {"min_gpu_memory_mb": 0} and "queue" not in plain
    assert "queued" not in to_wire(JobResponse("j", True, 1.0))
    assert "queue_position" not in to_wire(JobStatus("j", "running", 0.5, "x", 3))


def test_issue_12_fields_round_trip() -> None:
    request = JobRequest("j", "train-demo", requirements=Requirements(0, gpus=2), queue=True)
    wire = to_wire(request)
    assert wire["requirements"] == {"min_gpu_memory_mb": 0, "gpus": 2} and wire["queue"] is True
    assert parse_message(wire) == request
    queued = JobResponse("j", True, 1.0, queued=True, queue_position=2, estimated_start_seconds=30.0)
    assert parse_message(to_wire(queued)) == queued
    status = JobStatus("j", "queued", 0.0, "queued at 1", 1, queue_position=1, estimated_start_seconds=0.0)
    assert parse_message(to_wire(status)) == status


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"requirements": {"gpus": 0}}, "requirements.gpus"),
        ({"queue": "yes"}, "queue"),
    ],
)
def test_issue_12_fields_are_checked(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(MessageError) as caught:
        parse_message({"app_message_type": "job_request", "job_id": "j", "job_type": "t", **payload})
    assert caught.value.field == field
