"""The machine's rows, read once and tried per event: the table's semantics without a lookup by name per call.

`transitions` builds the machine from `table.TRANSITIONS` (the one place the protocol is written); the tests, the
diagrams and the totality check read that machine. Firing an event through `Event.trigger` resolves every guard
and action by name, wraps the call in event data and logs each step, which cost the core about a third of its
time per event. `Rows.of(machine, model)` reads the machine's own rows once, binds their guards and actions to
`model`, and `Rows.fire` tries them exactly as `transitions` does: the rows of (trigger, state) in order; the
first whose `conditions` all hold and none of whose `unless` does is taken: its `dest` (unless an internal row)
becomes the state, then its `after` callbacks run. A trigger without rows for the state raises `MachineError`,
as `transitions` does. Machines with callbacks this does not run (prepare, before, on enter/exit, machine-wide
ones) are refused when the rows are read, so the two can never differ silently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import attrs
from transitions import Machine, MachineError

S = TypeVar("S")  # a state (an enum member)
A = TypeVar("A")  # what guards and actions take (the stimulus)


class Stateful(Protocol[S]):
    state: S


@attrs.frozen
class Row(Generic[S, A]):
    """One row, bound: guards that must hold (`when`), guards that must not (`unless`), the next state, actions."""

    when: tuple[Callable[[A], bool], ...]
    unless: tuple[Callable[[A], bool], ...]
    dest: S | None
    after: tuple[Callable[[A], None], ...]


@attrs.frozen
class Rows(Generic[S, A]):
    """Per trigger, per state: the rows `transitions` would try, in its order."""

    rows: dict[str, dict[S, tuple[Row[S, A], ...]]]

    @classmethod
    def of(cls, machine: Machine, model: object) -> Rows[S, A]:
        """The rows of `machine`, their guards and actions bound to `model` (methods named in the table)."""
        machine_wide = ("prepare_event", "before_state_change", "after_state_change", "finalize_event")
        if any(getattr(machine, name) for name in machine_wide) or machine.on_exception or machine.has_queue:
            raise ValueError(
                "dispatch: the machine has machine-wide callbacks or a queue the rows do not run"
            )
        for state in machine.states.values():
            if state.on_enter or state.on_exit:
                raise ValueError(f"dispatch: state {state.name} has enter/exit callbacks the rows do not run")
        rows: dict[str, dict[Any, tuple[Row[Any, Any], ...]]] = {}
        for trigger, event in machine.events.items():
            rows[trigger] = {
                machine.get_state(source).value: tuple(_bind(machine, t, model) for t in transitions)
                for source, transitions in event.transitions.items()
            }
        return cls(rows)

    def fire(self, trigger: str, record: Stateful[S], arg: A) -> None:
        """Take the first row of `trigger` from `record.state` whose guards hold; move `record` and act."""
        rows = self.rows[trigger].get(record.state)
        if rows is None:
            raise MachineError(f"Can't trigger event {trigger} from state {record.state}!")
        for row in rows:
            for guard in row.when:
                if not guard(arg):
                    break
            else:
                for guard in row.unless:
                    if guard(arg):
                        break
                else:
                    if row.dest is not None:
                        record.state = row.dest
                    for action in row.after:
                        action(arg)
                    return


def _bind(machine: Machine, transition: Any, model: object) -> Row[Any, Any]:
    if transition.prepare or transition.before:
        raise ValueError("dispatch: a row has prepare/before callbacks the rows do not run")
    when = tuple(_callable(model, c.func) for c in transition.conditions if c.target)
    unless = tuple(_callable(model, c.func) for c in transition.conditions if not c.target)
    if [c.target for c in transition.conditions] != [True] * len(when) + [False] * len(unless):
        raise ValueError("dispatch: a row's conditions are not all before its unless guards")
    dest = None if transition.dest is None else machine.get_state(transition.dest).value
    return Row(when, unless, dest, tuple(_callable(model, name) for name in transition.after))


def _callable(model: object, func: Any) -> Callable[[Any], Any]:
    """A guard or action as the table names it: a method of the model (by name), or a callable itself."""
    bound = getattr(model, func) if isinstance(func, str) else func
    if not callable(bound):
        raise ValueError(f"dispatch: {func!r} is not a method of the model")
    return bound  # type: ignore[no-any-return]
