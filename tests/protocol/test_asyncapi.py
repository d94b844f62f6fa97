"""docs/asyncapi.yaml: generated from the types, never stale, complete, and strict where the parsers are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from support.contract import WireCheck, problems

from fsm_worker.protocol import asyncapi, messages
from fsm_worker.protocol.messages import JobRequest, JobResult, JobStatus, Metrics, to_wire
from fsm_worker.protocol.transfer import frames

DOC = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
SHA = "ab" * 32


def test_the_document_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == asyncapi.render(), "docs/asyncapi.yaml is stale: ./run contract"
    assert asyncapi.main(["--check", "--out", str(DOC)]) == 0


def test_check_mode_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "asyncapi.yaml"
    stale.write_text("asyncapi: 3.0.0\n", encoding="utf-8")
    assert asyncapi.main(["--check", "--out", str(stale)]) == 1
    assert asyncapi.main(["--out", str(stale)]) == 0 and stale.read_text() == asyncapi.render()


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


def test_it_is_asyncapi_3_and_every_reference_resolves() -> None:
    document = yaml.safe_load(DOC.read_text(encoding="utf-8"))
    assert document["asyncapi"].startswith("3.")
    assert set(document["channels"]) == {"signaling", "peer", "data_channel"}
    assert document["channels"]["data_channel"]["address"] == "fsm-transfer"
    for ref in refs(document):
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert node, ref
    for operation in document["operations"].values():
        assert operation["action"] in ("send", "receive")


def test_every_message_frame_and_event_has_a_schema() -> None:
    schemas = asyncapi.build()["components"]["schemas"]
    for cls in messages.MESSAGE_TYPES.values():
        assert schemas[cls.__name__]["properties"]["app_message_type"] == {"const": cls.TYPE}
    listed = {option["$ref"].rsplit("/", 1)[1] for option in schemas["AppMessage"]["oneOf"]}
    assert listed == {cls.__name__ for cls in messages.MESSAGE_TYPES.values()}
    for frame in frames.FRAME_TYPES.values():
        assert schemas[f"Frame{frame.__name__}"]["additionalProperties"] is False  # unknown fields: BAD_FRAME
    for name in ("Auth", "Welcome", "PeerMessageSend", "PeerMessageDeliver", "DiscoverPeers", "ErrorAck"):
        assert name in schemas


def test_required_and_optional_fields_follow_the_types() -> None:
    schemas = asyncapi.build()["components"]["schemas"]
    assert schemas["JobRequest"]["required"] == ["app_message_type", "job_id", "job_type"]
    assert schemas["RtcOffer"]["required"] == ["app_message_type", "job_id", "sdp"]  # options is optional
    assert "null" in schemas["AppError"]["properties"]["job_id"]["description"]  # always sent, maybe null
    assert schemas["JobComplete"]["properties"]["status"] == {"const": "completed"}
    assert schemas["Auth"]["required"] == ["token", "peer_id", "role"]  # metadata optional, others refused
    assert schemas["Auth"]["additionalProperties"] is False


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        ("JobStatus", to_wire(JobStatus("j", "running", 0.5, "half", 3, Metrics(epoch=2, loss=0.25)))),
        ("JobRequest", to_wire(JobRequest("j", "train-demo", {"epochs": 3}, job_key_sha256=SHA))),
        ("FramePut", json.loads(frames.encode_frame(frames.Put("a.csv", 10, SHA)))),
        ("Welcome", {"peer_id": "w-1", "resume_secret": "0f" * 32}),
        ("Auth", {"token": "t", "peer_id": "c-1", "role": "client", "metadata": {"tags": ["x"]}}),
    ],
)
def test_valid_values_fit(schema: str, value: object) -> None:
    assert problems(schema, value) == []


@pytest.mark.parametrize(
    ("schema", "value", "why"),
    [
        (
            "JobStatus",
            {
                "app_message_type": "job_status",
                "job_id": "j",
                "status": "running",
                "progress": 1.5,
                "message": "",
            },
            "1.5 is greater than the maximum of 1",
        ),
        (
            "JobRequest",
            {
                "app_message_type": "job_request",
                "job_id": "j",
                "job_type": "t",
                "job_key_sha256": SHA.upper(),
            },
            "is not valid under any",
        ),
        ("FramePut", {"type": "put", "name": "a", "size": 1, "sha256": SHA.upper()}, "does not match"),
        (
            "FramePut",
            {"type": "put", "name": "a", "size": 1, "sha256": SHA, "mode": 1},
            "Additional properties",
        ),
        ("Auth", {"token": "t", "peer_id": "c 1", "role": "client"}, "does not match"),
        ("Auth", {"token": "t", "peer_id": "c", "role": "client", "extra": 1}, "Additional properties"),
        ("JobAssignment", {"app_message_type": "job_assignment"}, "'job_id' is a required property"),
    ],
)
def test_invalid_values_are_refused_like_the_parsers_refuse_them(
    schema: str, value: object, why: str
) -> None:
    found = problems(schema, value)
    assert any(why in problem for problem in found), found


def test_the_wire_check_is_installed_and_catches_a_mismatch(wire_contract: WireCheck) -> None:
    status = JobStatus("j", "running", 0.5, "half")
    object.__setattr__(status, "progress", 2.0)  # what a buggy sender could put on the wire
    messages.to_wire(status)  # the module's own name is wrapped too
    assert any("2.0 is greater than the maximum" in v for v in wire_contract.violations)
    wire_contract.violations.clear()
    wire = WireCheck()
    wire.check_envelope(
        "PeerMessageDeliver", {"from_peer_id": "a", "to_peer_id": "b", "payload": {"x": 1}}, "t"
    )
    assert wire.violations == []  # an unknown payload is relayed as it is: not the contract's business
    bad = {"app_message_type": "job_cancel", "job_id": "j", "job_key": 5}
    wire.check_envelope("PeerMessageDeliver", {"from_peer_id": "a b", "to_peer_id": "b", "payload": bad}, "t")
    assert len(wire.violations) == 1 and "from_peer_id" in wire.violations[0]


# --- the schema agrees with the parser, field by field -------------------------------------------------------

EXAMPLES: list[dict[str, Any]] = [
    to_wire(m)
    for m in (
        JobRequest(
            "j",
            "train-demo",
            {"epochs": 3},
            messages.Requirements(100),
            {"rows": 5},
            SHA,
            (messages.InputFile("a.csv", 10),),
        ),
        messages.JobAssignment("j", "k" * 16),
        messages.JobCancel("j", "k" * 16),
        messages.JobStop("j", "k" * 16),
        messages.JobSync("j", 2, "k" * 16),
        messages.RtcOffer("j", "v=0", {"rtc_fast_path": {"version": 1}}, "k" * 16),
        messages.JobResponse("j", False, None, "busy", ("one",)),
        messages.JobResponse("j", True, 1.5),
        messages.JobCancelled("j", 3),
        messages.ReservationExpired("j"),
        JobStatus("j", "running", 0.5, "half", 2, Metrics(1, 2, 0.5, 0.6, 0.01, 30.0, {"acc": 0.9})),
        messages.JobComplete("j", JobResult(1.0, 0.5), 4, Metrics(loss=0.1), True),
        messages.JobFailed("j", messages.JobError("EXIT_NONZERO", "boom", False), 5),
        messages.AppError("INVALID_MESSAGE", "job_id: missing"),
        messages.RtcAnswer("j", "v=0", {}),
    )
]
FRAME_EXAMPLES: list[dict[str, Any]] = [
    json.loads(frames.encode_frame(f))
    for f in (
        frames.Put("a.csv", 10, SHA, True),
        frames.End("a.csv"),
        frames.Commit(),
        frames.FetchResults(),
        frames.Ready("a.csv", 5, SHA),
        frames.Have("a.csv", 10, SHA),
        frames.Ack("a.csv", 10, SHA),
        frames.Committed(["a.csv"]),
        frames.FileHeader("m.npz", 3, SHA),
        frames.Results(1, 3),
        frames.ResultsDone(1),
        frames.Error("BAD_NAME", "no", "x", "put"),
    )
]
# Printable ASCII only: the parsers also refuse non-printable identifiers, which the schema does not express.
ATOMS = (
    st.none()
    | st.booleans()
    | st.integers(-3, 2**33)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20)
    | st.sampled_from(["", "ab" * 32, SHA.upper(), "k" * 16, "x" * 200, 0.5, 1.0, -1, 2])
)
VALUES = st.recursive(
    ATOMS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "loss", ""]), inner, max_size=3)
    ),
    max_leaves=6,
)


def integral_float(value: object) -> bool:
    """JSON Schema's `integer` takes 1.0 (one JSON number); the parsers want 1: the one known gap."""
    if isinstance(value, dict):
        return any(integral_float(item) for item in value.values())
    if isinstance(value, list):
        return any(integral_float(item) for item in value)
    return isinstance(value, float) and value.is_integer()


def agree(valid: bool, parsed: bool, value: object) -> bool:
    """Accepted by the parser ⇒ valid, always; valid ⇒ accepted, except for the integer gap."""
    return valid == parsed or (valid and not parsed and integral_float(value))


def parses(parse: Any, value: object) -> bool:
    try:
        parse(value)
    except (messages.MessageError, ValueError):
        return False
    return True


@settings(max_examples=600, deadline=None)
@given(data=st.data())
def test_a_message_is_valid_exactly_when_the_parser_accepts_it(data: st.DataObject) -> None:
    example = data.draw(st.sampled_from(EXAMPLES))
    payload = dict(example)
    field = data.draw(st.sampled_from([*sorted(set(payload) - {"app_message_type"}), "extra"]))
    if data.draw(st.booleans()) and field in payload:
        del payload[field]
    else:
        payload[field] = data.draw(VALUES)
    cls = messages.MESSAGE_TYPES[payload["app_message_type"]]
    judged = {**payload, **cls.CONSTANTS}  # the parser ignores the fixed fields: written, never read
    valid, parsed = problems(cls.__name__, judged) == [], parses(messages.parse_message, payload)
    assert agree(valid, parsed, payload), (valid, parsed, payload)


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_a_frame_is_valid_exactly_when_the_parser_accepts_it(data: st.DataObject) -> None:
    example = data.draw(st.sampled_from(FRAME_EXAMPLES))
    frame = dict(example)
    field = data.draw(st.sampled_from([*sorted(set(frame) - {"type"}), "extra"]))
    if data.draw(st.booleans()) and field in frame:
        del frame[field]
    else:
        frame[field] = data.draw(VALUES)
    name = f"Frame{frames.FRAME_TYPES[frame['type']].__name__}"
    valid, parsed = problems(name, frame) == [], parses(frames.parse_frame, json.dumps(frame))
    assert agree(valid, parsed, frame), (valid, parsed, frame)
