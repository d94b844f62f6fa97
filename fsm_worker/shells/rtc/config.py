"""ICE server configuration for aiortc peer connections."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs
from aiortc import RTCConfiguration, RTCIceServer


def _to_urls(value: str | Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@attrs.frozen
class IceServerConfig:
    """One STUN/TURN server: ``urls`` like ``stun:host:3478`` or ``turn:host:3478?transport=udp``."""

    urls: tuple[str, ...] = attrs.field(converter=_to_urls)
    username: str | None = None
    credential: str | None = None

    @urls.validator
    def _check_urls(self, _attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
        if not value:
            raise ValueError("IceServerConfig.urls must not be empty")
        for url in value:
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ValueError(f"IceServerConfig.urls: unsupported ICE server URL {url!r}")


def make_configuration(ice_servers: Sequence[IceServerConfig] = ()) -> RTCConfiguration:
    """Build an ``RTCConfiguration``; the default has no ICE servers at all (offline/loopback).

    aiortc substitutes a public Google STUN server when ``iceServers`` is ``None``; an explicit
    empty list avoids that.
    """
    servers = [
        RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential) for s in ice_servers
    ]
    return RTCConfiguration(iceServers=servers)
