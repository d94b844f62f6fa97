"""Make aioice offer 127.0.0.1 as a host ICE candidate, per connection.

aioice enumerates host addresses in ``aioice.ice.get_host_addresses`` and drops 127.0.0.1; the
gatherer looks the function up as a module global on every gathering. :func:`install_host_address_hook`
wraps that one function, once per process (idempotent). The wrapper serves the connection that is
gathering: :class:`~fsm_worker.shells.rtc.peer.FsmPeerConnection` runs its gathering inside
:func:`gathering_for` (a context variable), so each connection gets its own ``RtcOptions.loopback`` mode.
A plain ``RTCPeerConnection`` (tests, benchmarks) gets the process default set by
:func:`enable_loopback_candidates`, or aioice's own behaviour.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import aioice.ice

LOOPBACK_V4 = "127.0.0.1"

_HostAddresses = Callable[..., list[str]]

_connection_mode: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fsm_worker_loopback_mode", default=None
)


class _LoopbackState:
    original: _HostAddresses | None = None
    default_mode: str = "off"  # for connections gathering outside gathering_for()


def _addresses(original: _HostAddresses, mode: str, use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if mode == "only":
        return [LOOPBACK_V4] if use_ipv4 else []
    addresses = original(use_ipv4, use_ipv6)
    if mode == "add" and use_ipv4 and LOOPBACK_V4 not in addresses:
        return [*addresses, LOOPBACK_V4]
    return addresses


def install_host_address_hook() -> None:
    """Wrap ``aioice.ice.get_host_addresses`` once (idempotent); the wrapper reads the gathering mode."""
    if _LoopbackState.original is not None:
        return
    original = aioice.ice.get_host_addresses
    _LoopbackState.original = original

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        """aioice's host addresses, plus (or only) 127.0.0.1 as the gathering connection asks."""
        mode = _connection_mode.get() or _LoopbackState.default_mode
        return _addresses(original, mode, use_ipv4, use_ipv6)

    aioice.ice.get_host_addresses = get_host_addresses


def host_address_hook_installed() -> bool:
    """Whether the wrapper is installed."""
    return _LoopbackState.original is not None


@contextlib.contextmanager
def gathering_for(mode: str) -> Iterator[None]:
    """Gather (inside this block, and in tasks it starts) with loopback ``mode``: "off", "add" or "only"."""
    token = _connection_mode.set(mode)
    try:
        yield
    finally:
        _connection_mode.reset(token)


def enable_loopback_candidates(*, exclusive: bool = False) -> None:
    """Process default for plain aiortc connections: offer 127.0.0.1 (only it, with ``exclusive``).

    For tests and benchmarks that build ``RTCPeerConnection`` themselves; connections made by
    ``create_peer_connection`` follow their own ``RtcOptions.loopback`` instead. Idempotent.
    """
    install_host_address_hook()
    _LoopbackState.default_mode = "only" if exclusive else "add"


def use_loopback_candidates(only: bool) -> None:
    """Add 127.0.0.1 to the default host candidates; with `only`, make it the only one (never downgrades)."""
    if only:
        enable_loopback_candidates(exclusive=True)
    elif _LoopbackState.default_mode == "off":
        enable_loopback_candidates()


def disable_loopback_candidates() -> None:
    """Restore aioice's own address enumeration (mainly for tests)."""
    if _LoopbackState.original is not None:
        aioice.ice.get_host_addresses = _LoopbackState.original
        _LoopbackState.original = None
    _LoopbackState.default_mode = "off"


def loopback_candidates_enabled() -> bool:
    """Whether the 127.0.0.1 wrapper is installed."""
    return host_address_hook_installed()
