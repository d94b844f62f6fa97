"""The environment a job starts with: an allow-list of the worker's variables, never its secrets.

A job gets ``PATH``, ``HOME``, the locale (``LANG``, ``LANGUAGE``, ``LC_*``), ``TZ``, ``TMPDIR``, ``USER``,
``LOGNAME`` and the GPU selection variables (``CUDA_*``, ``NVIDIA_*``, ``HIP_VISIBLE_DEVICES``,
``ROCR_VISIBLE_DEVICES``, ``GPU_DEVICE_ORDINAL``); the worker's owner adds names or ``PREFIX*`` patterns
(``JobRunner(env_allow=...)``), a job type adds what it declares (``Command.env_passthrough``) and its own
values (``Command.env``). ``FSM_WORKER_*`` variables (the signaling token, the ICE credential) never
reach a job, whatever the lists say; the runner sets its own ``FSM_WORKER_RUN`` tag afterwards.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Mapping

log = logging.getLogger(__name__)

DEFAULT_ALLOW: tuple[str, ...] = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TMPDIR",
    "CUDA_*",
    "NVIDIA_*",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
)
#: Never passed to a job: the worker's own settings, its signaling token and its ICE credential among them.
DENIED_PREFIX = "FSM_WORKER_"


def _allowed(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def job_environment(
    worker_env: Mapping[str, str],
    *,
    allow: Iterable[str] = DEFAULT_ALLOW,
    passthrough: Iterable[str] = (),
    extra: Mapping[str, str] | None = None,
    inherit: bool = True,
) -> dict[str, str]:
    """The start-up environment: allowed worker variables, then ``extra``; ``FSM_WORKER_*`` removed."""
    patterns = (*allow, *passthrough)
    env = {k: v for k, v in worker_env.items() if _allowed(k, patterns)} if inherit else {}
    env.update(extra or {})
    for name in [k for k in env if k.startswith(DENIED_PREFIX)]:
        if name in (extra or {}):
            log.warning("job environment: %s is never passed to a job; dropped", name)
        del env[name]
    return env
