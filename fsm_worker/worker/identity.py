"""The worker's resume secret on disk: it reclaims the worker's peer id after a restart."""

from __future__ import annotations

import hashlib
from pathlib import Path


class ResumeSecret:
    """The file under `workdir` that keeps the secret for `peer_id` (the server reserves a dropped id for it)."""

    def __init__(self, workdir: Path, peer_id: str) -> None:
        safe = hashlib.sha256(peer_id.encode()).hexdigest()[:16]
        self.path = workdir / f"resume-secret-{safe}"

    def load(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def save(self, secret: str | None) -> None:
        if secret:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch(mode=0o600)
            self.path.write_text(secret, encoding="utf-8")
