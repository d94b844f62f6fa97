"""Run every benchmark as a subprocess, print their tables, then one summary table (figure, ours, baseline, ratio,
target, met?).

Run: ``.venv/bin/python benchmarks/run_all.py [--only scale,end_to_end] [--quick]``. Each script prints its own
table (passed through as it runs); the figures of the summary are read from that output: ``SUMMARY {json}``
lines where a script prints them (rtc_throughput, datachannel, transfer_files, scale, end_to_end, slots, flood,
slow_reader, hold_cap),
otherwise parsed from its table.
Every same-run comparison interleaves ours and the baseline (ABBA order) inside the script that measures it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import attrs

HERE = Path(__file__).resolve().parent
SCRIPT_TIMEOUT = 900.0


@attrs.frozen
class Row:
    """One figure of the summary. ``met`` is None where no target applies."""

    figure: str
    ours: float
    baseline: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    baseline_name: str = ""

    @property
    def ratio(self) -> float | None:
        return self.ours / self.baseline if self.baseline else None


Parser = Callable[[str], list[Row]]


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def parse_summary_lines(output: str) -> list[Row]:
    """``SUMMARY {json}`` lines (scale.py, end_to_end.py, and any script that adopts them)."""
    rows = []
    for line in output.splitlines():
        if line.startswith("SUMMARY "):
            data = json.loads(line[len("SUMMARY ") :])
            rows.append(Row(data["figure"], float(data["ours"]), data.get("baseline"), data.get("unit", ""),
                            data.get("target", ""), data.get("met"), data.get("baseline_name", "")))  # fmt: skip
    return rows


def parse_core(output: str) -> list[Row]:
    bare = re.search(r"bare dict dispatch \(baseline\)\s+([\d,]+)", output)
    ours = re.search(r"JobCoordinator \(transitions\)\s+([\d,]+)", output)
    if not (bare and ours):
        return []
    value = _number(ours.group(1))
    rows = [Row("core: events/s through the coordinator", value, _number(bare.group(1)), "ev/s", ">= 50000",
                value >= 50_000, "bare dict dispatch")]  # fmt: skip
    grouped = re.search(r"journaled, group commit \(\d+\)\s+([\d,]+)", output)
    if grouped:  # the journal's cost: same run, interleaved with the plain coordinator
        journaled = _number(grouped.group(1))
        rows.append(Row("core: events/s with the journal (group commit)", journaled, value, "ev/s",
                        ">= 25000 and < 2x cost", journaled >= 25_000 and value / journaled < 2,
                        "the coordinator without it"))  # fmt: skip
    return rows


_SIGNALING_ROW = re.compile(
    r"^(1 node|2 nodes \+ redis)\s+(RTT p50 ms|RTT p99 ms|routed msg/s)\s+([\d.]+)\s+([\d.]+)"
)


def parse_signaling(output: str) -> list[Row]:
    """RTT p50/p99 and routed msg/s; the target (<= 1.2x bare on one node, <= 1.3x on two) is a cost ratio."""
    rows = []
    for line in output.splitlines():
        match = _SIGNALING_ROW.match(line.strip())
        if not match:
            continue
        setup, metric, bare, ours = (
            match.group(1),
            match.group(2),
            _number(match.group(3)),
            _number(match.group(4)),
        )
        limit = 1.2 if setup == "1 node" else 1.3
        cost = ours / bare if metric.startswith("RTT") else bare / ours  # >1 means slower than the bare relay
        unit = "msg/s" if metric == "routed msg/s" else "ms"
        target, met = "", None
        if metric != "RTT p99 ms":
            target = f"cost <= {limit}x bare"
            met = cost <= limit
        name = {"RTT p50 ms": "RTT p50", "RTT p99 ms": "RTT p99", "routed msg/s": "routed"}[metric]
        rows.append(
            Row(f"signaling {setup}: {name}", ours, bare, unit, target, met, "bare python-socketio relay")
        )
    disc = re.search(r"discovery over 5000 workers.*?: (.*)", output)
    if disc:
        for kind, value in re.findall(r"(\w+) ([\d.]+) ms", disc.group(1)):
            rows.append(Row(f"signaling: registry read + filter of 5000 ({kind})", float(value), None, "ms"))
    return rows


@attrs.frozen
class Bench:
    name: str
    args: tuple[str, ...]
    parse: Parser
    quick_args: tuple[str, ...] = ()


BENCHES = (
    Bench("core", ("core.py",), parse_core),
    Bench("signaling", ("signaling.py", "--quick"), parse_signaling),
    Bench(
        "rtc_throughput",
        ("rtc_throughput.py",),
        parse_summary_lines,
        ("--mib", "30", "--stock-mib", "5", "--rounds", "1"),
    ),
    # datachannel.py enters a network namespace of its own (root; nftables for fragdrop): see its docstring.
    Bench(
        "datachannel-mtu1500",
        ("datachannel.py", "--path", "mtu1500", "--size-mb", "64", "--rounds", "2"),
        parse_summary_lines,
        ("--size-mb", "16", "--rounds", "1"),
    ),
    Bench(
        "datachannel-fragdrop",
        ("datachannel.py", "--path", "fragdrop", "--size-mb", "32", "--rounds", "1"),
        parse_summary_lines,
        (
            "--size-mb",
            "8",
        ),
    ),
    Bench(
        "datachannel-2gb",
        ("datachannel.py", "--path", "mtu1500", "--rounds", "0", "--memory-mb", "2048"),
        parse_summary_lines,
        ("--memory-mb", "256"),
    ),
    # issue 15: many small files, ours vs raw TCP and vs our upload without pipelining (same run)
    Bench(
        "transfer_files",
        ("transfer_files.py", "--files", "500", "--kib", "32", "--rounds", "2", "--serial"),
        parse_summary_lines,
        ("--files", "100", "--rounds", "1"),
    ),
    Bench("scale", ("scale.py",), parse_summary_lines, ("--workers", "1000")),
    Bench("end_to_end", ("end_to_end.py",), parse_summary_lines, ("--jobs", "10")),
    Bench("slots", ("slots.py",), parse_summary_lines, ("--jobs", "8", "--chain", "4", "--job-seconds", "1")),
    # issue 10: a bystander's round trip under a job_request flood (item 5); server memory with a slow reader (item 6)
    Bench("flood", ("flood.py",), parse_summary_lines, ("--quick",)),
    Bench("slow_reader", ("slow_reader.py", "--rounds", "2"), parse_summary_lines, ("--quick",)),
    Bench("hold_cap", ("hold_cap.py", "--rounds", "2"), parse_summary_lines, ("--quick",)),
)


def run_one(bench: Bench, quick: bool) -> tuple[str, float, int]:
    """Run a script, echo its output as it comes; return (output, seconds, return code)."""
    cmd = [
        sys.executable,
        "-u",
        str(HERE / bench.args[0]),
        *bench.args[1:],
        *(bench.quick_args if quick else ()),
    ]
    print(f"\n===== {bench.name}: {' '.join(cmd[2:])}", flush=True)
    # the repository (fsm_worker) and tests/ (the shared `support` helpers, e.g. the bare relay's signaling)
    path = os.pathsep.join((str(HERE.parent), str(HERE.parent / "tests")))
    env = {**os.environ, "COLUMNS": "120", "PYTHONPATH": path}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if not line.startswith("SUMMARY "):
            print(line, end="", flush=True)
    try:
        code = proc.wait(SCRIPT_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    seconds = time.perf_counter() - start
    print(f"===== {bench.name}: exit {code} in {seconds:.0f} s", flush=True)
    return "".join(lines), seconds, code


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def print_summary(rows: list[Row], failures: list[str], timings: dict[str, float]) -> None:
    header = f"{'figure':<58}{'ours':>11}{'baseline':>11}{'ratio':>8}  {'unit':<6}{'target':<20}{'met?':<5}"
    print("\n" + "=" * len(header) + "\nSUMMARY (ratio = ours / baseline, both measured in the same run)")
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = "-" if row.ratio is None else f"{row.ratio:.3f}x" if row.ratio < 0.1 else f"{row.ratio:.2f}x"
        met = "" if row.met is None else ("yes" if row.met else "NO")
        print(f"{row.figure[:57]:<58}{_fmt(row.ours):>11}{_fmt(row.baseline):>11}{ratio:>8}  "
              f"{row.unit:<6}{row.target:<20}{met:<5}")  # fmt: skip
    missed = [row.figure for row in rows if row.met is False]
    print("-" * len(header))
    print("run time: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items()))
    print(f"targets met: {sum(1 for r in rows if r.met)}/{sum(1 for r in rows if r.met is not None)}"
          + (f"; missed: {'; '.join(missed)}" if missed else ""))  # fmt: skip
    if failures:
        print("FAILED: " + ", ".join(failures))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--only", default="", help="comma-separated names: " + ",".join(b.name for b in BENCHES)
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes everywhere (a smoke run)")
    args = parser.parse_args()
    wanted = {name.strip() for name in args.only.split(",") if name.strip()}
    rows: list[Row] = []
    failures: list[str] = []
    timings: dict[str, float] = {}
    for bench in BENCHES:
        if wanted and bench.name not in wanted:
            continue
        if not (HERE / bench.args[0]).exists():
            print(f"\n===== {bench.name}: {bench.args[0]} not present, skipped")
            continue
        output, seconds, code = run_one(bench, args.quick)
        timings[bench.name] = seconds
        parsed = bench.parse(output)
        if code != 0 or not parsed:
            failures.append(f"{bench.name} (exit {code}, {len(parsed)} figures parsed)")
        rows += parsed
    print_summary(rows, failures, timings)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
