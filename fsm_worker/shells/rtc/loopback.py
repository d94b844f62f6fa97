"""Make aioice offer 127.0.0.1 as a host ICE candidate.

aioice enumerates host addresses in ``aioice.ice.get_host_addresses`` and drops 127.0.0.1; the
gatherer looks the function up as a module global on every gathering, so wrapping that one
function is enough. The wrapper is installed once; later calls only change the mode.
"""

from __future__ import annotations

from collections.abc import Callable

import aioice.ice

LOOPBACK_V4 = "127.0.0.1"

_HostAddresses = Callable[..., list[str]]


class _LoopbackState:
    original: _HostAddresses | None = None
    exclusive: bool = False


def enable_loopback_candidates(*, exclusive: bool = False) -> None:
    """Offer 127.0.0.1 as a host candidate (idempotent).

    With ``exclusive=True`` 127.0.0.1 is the *only* host candidate (tests, benchmarks: traffic
    never leaves the loopback interface). Calling again switches the mode; nothing is wrapped twice.
    """
    _LoopbackState.exclusive = exclusive
    if _LoopbackState.original is not None:
        return
    original = aioice.ice.get_host_addresses
    _LoopbackState.original = original

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        """aioice's host addresses plus (or only) 127.0.0.1."""
        if not use_ipv4:
            return [] if _LoopbackState.exclusive else original(use_ipv4, use_ipv6)
        if _LoopbackState.exclusive:
            return [LOOPBACK_V4]
        addresses = original(use_ipv4, use_ipv6)
        return addresses if LOOPBACK_V4 in addresses else [*addresses, LOOPBACK_V4]

    aioice.ice.get_host_addresses = get_host_addresses


def use_loopback_candidates(only: bool) -> None:
    """Add 127.0.0.1 to the host candidates; with `only`, make it the only one (never downgrades `only`)."""
    if only:
        enable_loopback_candidates(exclusive=True)
    elif not loopback_candidates_enabled():
        enable_loopback_candidates()


def disable_loopback_candidates() -> None:
    """Restore aioice's own address enumeration (mainly for tests)."""
    if _LoopbackState.original is not None:
        aioice.ice.get_host_addresses = _LoopbackState.original
        _LoopbackState.original = None
    _LoopbackState.exclusive = False


def loopback_candidates_enabled() -> bool:
    """Whether the 127.0.0.1 wrapper is installed."""
    return _LoopbackState.original is not None
