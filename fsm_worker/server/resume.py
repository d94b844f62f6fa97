"""Resume secrets the server can verify without its memory: HMAC-SHA256 under an operator's key.

A secret names one *lineage* of a peer id: the moment the id was claimed (``epoch``) and whether that claim
was made without knowing the id's history (``blind``, e.g. the first claim after a restart). It is
``base64url(version · epoch · blind · nonce · mac)`` where the MAC covers the room, the peer id and the rest,
so it is valid for exactly one id of one room. The registry compares lineages in :func:`secret_wins`.

The key comes from ``ServerConfig.resume_key`` (hex or any string), else from ``resume_key_file``; when that
file does not exist a random key is generated and written there (mode 0600), so secrets survive restarts of
this host. Nodes sharing Redis must share the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import struct
from pathlib import Path

import attrs

_VERSION = 1
_LAYOUT = struct.Struct(">BdB16s")  # version, epoch, blind, nonce
_MAC_BYTES = 32
#: Length of an issued secret: 58 ``[A-Za-z0-9_-]`` characters.
SECRET_CHARS = len(base64.urlsafe_b64encode(bytes(_LAYOUT.size + _MAC_BYTES)).rstrip(b"="))


@attrs.frozen
class Lineage:
    """One claim history of a peer id: when it began and whether it was claimed blind."""

    epoch: float
    blind: bool


def secret_wins(presented: Lineage, held: Lineage) -> bool:
    """Whether a verified secret of another lineage takes an id from the record that holds it.

    A blind claim (made without the id's history) loses to any lineage with history and to older blind
    ones; between lineages with history the newer one (a legitimate takeover after the grace) wins.
    """
    if held.blind and not presented.blind:
        return True
    if held.blind and presented.blind:
        return presented.epoch < held.epoch
    if not held.blind and not presented.blind:
        return presented.epoch > held.epoch
    return False


@attrs.frozen
class ResumeSigner:
    """Issues and verifies resume secrets for ``(room, peer_id)``."""

    key: bytes = attrs.field(repr=False)

    def _mac(self, room: str, peer_id: str, body: bytes) -> bytes:
        message = b"\x00".join((room.encode(), peer_id.encode(), body))
        return hmac.new(self.key, message, hashlib.sha256).digest()

    def issue(self, room: str, peer_id: str, lineage: Lineage) -> str:
        """A fresh secret for this id and lineage."""
        body = _LAYOUT.pack(_VERSION, lineage.epoch, int(lineage.blind), secrets.token_bytes(16))
        raw = body + self._mac(room, peer_id, body)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def verify(self, room: str, peer_id: str, secret: str) -> Lineage | None:
        """The lineage a secret proves for this id, or ``None`` if it was not issued for it under this key."""
        if len(secret) != SECRET_CHARS:
            return None
        try:
            raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
        except ValueError:
            return None
        if base64.urlsafe_b64encode(raw).decode().rstrip("=") != secret:
            return None  # only the canonical spelling: the unused low bits of the last character must be zero
        body, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
        if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, self._mac(room, peer_id, body)):
            return None
        version, epoch, blind, _nonce = _LAYOUT.unpack(body)
        if version != _VERSION:
            return None
        return Lineage(epoch=epoch, blind=bool(blind))


def default_key_file() -> Path:
    """``$XDG_STATE_HOME/fsm-worker/signaling-resume.key`` (``~/.local/state/...`` by default)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "fsm-worker" / "signaling-resume.key"


def load_key(configured: str | None, key_file: str | None) -> bytes:
    """The operator's key, else the key stored in ``key_file`` (generated there, mode 0600, if missing)."""
    if configured:
        return configured.encode()
    path = Path(key_file) if key_file else default_key_file()
    if path.exists():
        key = path.read_text().strip()
        if len(key) < 32:
            raise ValueError(f"resume key file {path} holds fewer than 32 characters")
        return key.encode()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another node on this host wrote it first
        return load_key(None, str(path))
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    return key.encode()
