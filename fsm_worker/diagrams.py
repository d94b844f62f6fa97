"""Generate `diagrams/` from the coordinator's transition table (`python -m fsm_worker.diagrams`).

- `worker-states.mmd`: the mermaid state diagram of every change of state, with the run's sub-states nested inside
  `busy` (drawn by transitions' HierarchicalGraphMachine from the flat table: `busy.running` is `running` in `busy`);
- `transitions.md`: the whole table, including the rows that keep the status, as markdown;
- `worker-states.svg`: the same diagram through graphviz, when the `dot` program and the `graphviz` package exist.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from transitions.extensions import HierarchicalGraphMachine
from transitions.extensions.nesting import NestedState

from fsm_worker.protocol.worker.coordinator import ANY, INTAKE, TRANSITIONS
from fsm_worker.protocol.worker.states import WorkerState

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "diagrams"
TITLE = "fsm_worker: worker status"


SEPARATOR = "__"  # between nested names in the drawing (mermaid ids allow no dots)


class _DiagramState(NestedState):
    separator = SEPARATOR


class _DiagramMachine(HierarchicalGraphMachine):
    state_cls = _DiagramState


def _nested(names: list[str]) -> list[Any]:
    """States named `a.b.c` as transitions' nested definition: `c` inside `b` inside `a`."""
    groups: dict[str, list[str]] = {}
    for name in names:
        head, _, rest = name.partition(".")
        groups.setdefault(head, [])
        if rest:
            groups[head].append(rest)
    return [{"name": head, "children": _nested(rest)} if rest else head for head, rest in groups.items()]


def _group(states: list[WorkerState]) -> list[str]:
    """State names, a complete group of sub-states named by its parent (`busy` for every `busy.*`)."""
    names = [state.value for state in states]
    parents = {name[:i] for name in names for i, char in enumerate(name) if char == "."}
    for parent in sorted(parents, key=len):
        members = [state.value for state in WorkerState if state.value.startswith(parent + ".")]
        if set(members) <= set(names):
            names = [name for name in names if name not in members] + [parent]
    return names


def _state_changes() -> list[dict[str, Any]]:
    changes = []
    for row in TRANSITIONS:
        if row["dest"] is None:
            continue
        source = row["source"]
        sources = list(WorkerState) if source == ANY else source if isinstance(source, list) else [source]
        label = {"trigger": row["trigger"], "conditions": row["conditions"], "unless": row["unless"]}
        dest = row["dest"].value.replace(".", SEPARATOR)
        changes += [
            {**label, "source": name.replace(".", SEPARATOR), "dest": dest} for name in _group(sources)
        ]
    return changes


def _graph(engine: Literal["mermaid", "graphviz"]) -> Any:
    model = type("Diagram", (), {})()
    _DiagramMachine(
        model=model,
        states=_nested([state.value for state in WorkerState]),
        initial=WorkerState.AVAILABLE.value,
        transitions=_state_changes(),
        auto_transitions=False,
        graph_engine=engine,
        show_conditions=True,
        title=TITLE,
    )
    return model.get_graph()  # type: ignore[attr-defined]


def render_mermaid() -> str:
    """The mermaid state diagram of every transition that changes the worker's state, sub-states nested."""
    return str(_graph("mermaid").draw(None)).rstrip() + "\n"


def _names(value: Any) -> str:
    if value == ANY:
        return "any"
    values = value if isinstance(value, list | tuple) else [value]
    return ", ".join(_group(list(values)))


def render_table() -> str:
    """Every row of the transition table as markdown, in the order the machine tries them."""
    lines = [
        "# Worker transition table",
        "",
        "Generated from `fsm_worker/protocol/worker/coordinator.py` by `python -m fsm_worker.diagrams`; do not edit.",
        "Rows for one trigger are tried in order; the first whose guards all hold is taken.",
        "States nest by name: `busy.stopping.early` is `early` inside `stopping` inside `busy`; `busy` alone means",
        "every sub-state of it.",
        "",
        "| trigger | from | to | guards | action |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in TRANSITIONS:
        guards = [*row["conditions"], *(f"not {name}" for name in row["unless"])]
        dest = "(same)" if row["dest"] is None else row["dest"].value
        lines.append(
            f"| `{row['trigger']}` | {_names(row['source'])} | {dest} | {', '.join(guards) or '-'} "
            f"| `{row['after'][0]}` |"
        )
    lines += [
        "",
        "## Intake (the second table: whether new jobs are taken, and the drain; `drain` goes through it first)",
        "",
        "| trigger | from | to | guards | action |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in INTAKE:
        dest = "(same)" if row["dest"] is None else row["dest"].value
        when = ", ".join(row.get("conditions", ())) or "-"
        lines.append(
            f"| `{row['trigger']}` | {row['source'].value} | {dest} | {when} | `{row['after'][0]}` |"
        )
    return "\n".join(lines) + "\n"


def expected_files() -> dict[str, str]:
    """The text files `diagrams/` must hold, by name."""
    return {"worker-states.mmd": render_mermaid(), "transitions.md": render_table()}


def write(directory: Path = DEFAULT_DIR) -> list[Path]:
    """Regenerate the diagrams in `directory`; return the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in expected_files().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    if shutil.which("dot") and importlib.util.find_spec("graphviz"):
        svg = directory / "worker-states.svg"
        svg.write_bytes(_graph("graphviz").pipe(format="svg"))
        written.append(svg)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_DIR, help="directory to write (default: diagrams/)"
    )
    args = parser.parse_args(argv)
    for path in write(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
