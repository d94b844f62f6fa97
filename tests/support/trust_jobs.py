"""Job types for the trust tests over real processes (loaded by `fsm-worker worker --job-types-from`).

`copy` (inputs copied to outputs), `sleep` (a minute: to be cancelled), `env-dump` (its environment as
`outputs/env.json`); the rogue ones for a worker in the test's process: `rogue-overwrite` (`.bashrc`,
`data.csv`), `rogue-escape` (`escape-x`, which a patched rogue sender names `../x`), `rogue-many` (5 files).
"""

from __future__ import annotations

import sys
from pathlib import Path

from fsm_worker.jobs.registry import JobTypeRegistry, StaticCommandHandler, default_registry

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
RESULT = "import json; print(json.dumps({'event': 'result'}), flush=True)"


def _writes(files: dict[str, str]) -> StaticCommandHandler:
    code = (
        "from pathlib import Path; Path('outputs').mkdir(exist_ok=True)\n"
        f"for name, text in {files!r}.items(): (Path('outputs') / name).write_text(text)\n"
        f"{RESULT}"
    )
    return StaticCommandHandler((sys.executable, "-c", code))


def job_types() -> JobTypeRegistry:
    """The built-in job types plus `copy`, `sleep` and `env-dump`."""
    types = default_registry()
    types.register("copy", StaticCommandHandler((sys.executable, "-u", str(SCRIPTS / "copy_job.py"))))
    types.register("sleep", StaticCommandHandler((sys.executable, "-c", "import time; time.sleep(60)")))
    dump = (
        "import json, os; from pathlib import Path; Path('outputs').mkdir(exist_ok=True)\n"
        "Path('outputs/env.json').write_text(json.dumps(dict(os.environ)))\n"
        f"{RESULT}"
    )
    types.register("env-dump", StaticCommandHandler((sys.executable, "-c", dump)))
    return types


def rogue_job_types() -> JobTypeRegistry:
    """What a rogue worker's jobs produce."""
    types = JobTypeRegistry()
    types.register("rogue-overwrite", _writes({".bashrc": "evil\n", "data.csv": "6,6,6\n"}))
    types.register("rogue-escape", _writes({"escape-x": "evil\n", "fine.txt": "ok\n"}))
    types.register("rogue-many", _writes({f"r{i}.txt": f"{i}\n" for i in range(5)}))
    return types
