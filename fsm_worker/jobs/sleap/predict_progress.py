"""``sleap-nn predict --gui`` progress lines: ``{"n_processed": 40, "n_total": 100, "rate": 9.5, "eta": 6.3}``."""

from __future__ import annotations

import json

import attrs

from fsm_worker.jobs.progress import ProgressLine


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@attrs.frozen
class PredictProgress:
    def parse(self, line: str) -> ProgressLine | None:
        if not line.startswith("{") or '"n_total"' not in line:
            return None
        try:
            obj = json.loads(line)
        except ValueError:
            return None
        done, total = _number(obj.get("n_processed")), _number(obj.get("n_total"))
        if not isinstance(obj, dict) or done is None or not total:
            return None
        metrics: dict[str, float] = {"frames": done}
        for key, name in (("eta", "eta_seconds"), ("rate", "frames_per_second")):
            value = _number(obj.get(key))
            if value is not None:
                metrics[name] = value
        return ProgressLine(min(done / total, 1.0), f"{int(done)}/{int(total)} frames", metrics)
