"""The core tries the table's rows itself (`dispatch.Rows`): for every (trigger, state) and every combination of
its guards' answers, it takes the same row as `transitions`' own `Event.trigger` — the same next state and the
same actions, in order — and it refuses a machine with callbacks it would not run."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from transitions import Machine, MachineError

from fsm_worker.protocol.worker.dispatch import Rows
from fsm_worker.protocol.worker.states import WorkerState
from fsm_worker.protocol.worker.table import TRANSITIONS

ACTIONS = {name for row in TRANSITIONS for name in row["after"]}


class Model:
    """Guards answer from `answers`; the table's actions append their name to `done`."""

    def __init__(self, answers: dict[str, bool]) -> None:
        self.state = WorkerState.AVAILABLE
        self.answers = answers
        self.done: list[str] = []
        self.asked: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name not in ACTIONS and name not in self.__dict__.get("answers", {}):
            raise AttributeError(name)

        def call(arg: object) -> object:
            assert arg == "stimulus"
            if name in self.answers:
                self.asked.append(name)
                return self.answers[name]
            self.done.append(name)
            return None

        return call


def _guards(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({name for row in rows for name in (*row["conditions"], *row["unless"])})


def _machine(model: object | None) -> Machine:
    states = list(WorkerState)
    return Machine(model=model, states=states, initial=WorkerState.AVAILABLE, transitions=TRANSITIONS,
                   auto_transitions=False)  # fmt: skip


def test_the_rows_take_the_row_transitions_takes() -> None:
    every_guard = _guards(TRANSITIONS)
    ours, theirs = Model(dict.fromkeys(every_guard, False)), Model(dict.fromkeys(every_guard, False))
    reference = _machine(theirs)
    rows: Rows[WorkerState, str] = Rows.of(_machine(None), ours)
    checked = 0
    for trigger in dict.fromkeys(row["trigger"] for row in TRANSITIONS):
        guards = _guards([row for row in TRANSITIONS if row["trigger"] == trigger])
        for state, values in itertools.product(
            WorkerState, itertools.product((False, True), repeat=len(guards))
        ):
            for model in (ours, theirs):
                model.state, model.done, model.asked = state, [], []
                model.answers.update(zip(guards, values, strict=True))
            try:
                reference.events[trigger].trigger(theirs, "stimulus")
            except MachineError:
                with pytest.raises(MachineError, match=trigger):
                    rows.fire(trigger, ours, "stimulus")
                continue
            rows.fire(trigger, ours, "stimulus")
            assert (ours.state, ours.done, ours.asked) == (theirs.state, theirs.done, theirs.asked), (
                trigger, state, ours.answers)  # fmt: skip
            checked += 1
    assert checked > len(TRANSITIONS)


def test_a_machine_with_callbacks_the_rows_do_not_run_is_refused() -> None:
    model = Model({})
    entering = Machine(model=None, states=["a", {"name": "b", "on_enter": ["entered"]}], initial="a",
                       transitions=[["go", "a", "b"]], auto_transitions=False)  # fmt: skip
    with pytest.raises(ValueError, match="enter/exit callbacks"):
        Rows.of(entering, model)
    before = Machine(model=None, states=["a", "b"], initial="a", auto_transitions=False,
                     transitions=[{"trigger": "go", "source": "a", "dest": "b", "before": "x"}])  # fmt: skip
    with pytest.raises(ValueError, match="prepare/before"):
        Rows.of(before, model)
    machine_wide = Machine(model=None, states=["a", "b"], initial="a", auto_transitions=False,
                           transitions=[["go", "a", "b"]], finalize_event="x")  # fmt: skip
    with pytest.raises(ValueError, match="machine-wide"):
        Rows.of(machine_wide, model)


def test_a_guard_may_be_a_callable_but_not_a_plain_attribute() -> None:
    class Door:
        state = "shut"
        locked = False

        def open_up(self, arg: str) -> None:
            self.opened_with = arg

    rows = [{"trigger": "push", "source": "shut", "dest": "open", "unless": [lambda arg: arg == "no"],
             "after": "open_up"}]  # fmt: skip
    door = Door()
    pushed: Rows[str, str] = Rows.of(Machine(None, ["shut", "open"], initial="shut", transitions=rows), door)
    pushed.fire("push", door, "no")
    assert door.state == "shut"
    pushed.fire("push", door, "hard")
    assert (door.state, door.opened_with) == ("open", "hard")
    by_attribute = [{"trigger": "push", "source": "shut", "dest": "open", "conditions": "locked"}]
    with pytest.raises(ValueError, match="'locked' is not a method"):
        Rows.of(Machine(None, ["shut", "open"], initial="shut", transitions=by_attribute), door)
