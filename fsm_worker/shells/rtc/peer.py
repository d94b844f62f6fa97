"""The peer-connection factory: every connection carries its own :class:`RtcOptions`.

Call :func:`install_rtc_patches` once at the program's entry point (the worker host, the job client, the
CLI and the demo do); it is idempotent. The only process-wide patch is aioice's host-address hook, and it
reads the options of the connection that is gathering, so two connections in one process never see each
other's settings.
"""

from __future__ import annotations

from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from fsm_worker.shells.rtc.config import make_configuration
from fsm_worker.shells.rtc.loopback import (
    gathering_for,
    host_address_hook_installed,
    install_host_address_hook,
)
from fsm_worker.shells.rtc.options import RtcOptions

__all__ = ["FsmPeerConnection", "create_peer_connection", "install_rtc_patches", "options_of"]


def install_rtc_patches() -> None:
    """Install the process-wide aioice hook (idempotent); call it once at start."""
    install_host_address_hook()


class FsmPeerConnection(RTCPeerConnection):  # type: ignore[misc]
    """An ``RTCPeerConnection`` that gathers its ICE candidates with its own options."""

    def __init__(self, options: RtcOptions) -> None:
        super().__init__(make_configuration(options.ice_servers))
        self.rtc_options = options

    async def setLocalDescription(self, sessionDescription: RTCSessionDescription | None = None) -> None:
        with gathering_for(self.rtc_options.loopback):
            await super().setLocalDescription(sessionDescription)

    async def setRemoteDescription(self, sessionDescription: RTCSessionDescription) -> None:
        with gathering_for(self.rtc_options.loopback):
            await super().setRemoteDescription(sessionDescription)


def create_peer_connection(options: RtcOptions | None = None) -> FsmPeerConnection:
    """A peer connection for ``options`` (default: ``RtcOptions()``).

    Raises ``RuntimeError`` if the options need 127.0.0.1 candidates and :func:`install_rtc_patches` was
    not called: the setting would silently do nothing otherwise.
    """
    options = options or RtcOptions()
    if options.loopback != "off" and not host_address_hook_installed():
        raise RuntimeError(
            f"RtcOptions.loopback={options.loopback!r} needs install_rtc_patches() "
            "(fsm_worker.shells.rtc) called once at start"
        )
    return FsmPeerConnection(options)


def options_of(pc: Any) -> RtcOptions:
    """The options ``pc`` was made with; a plain aiortc connection gets the defaults."""
    options = getattr(pc, "rtc_options", None)
    return options if isinstance(options, RtcOptions) else RtcOptions()
