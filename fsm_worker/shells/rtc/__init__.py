"""WebRTC peer setup (aiortc): per-connection options, the peer-connection factory, offer/answer helpers."""

from fsm_worker.shells.rtc.config import IceServerConfig, make_configuration
from fsm_worker.shells.rtc.loopback import (
    disable_loopback_candidates,
    enable_loopback_candidates,
    loopback_candidates_enabled,
)
from fsm_worker.shells.rtc.options import RtcOptions
from fsm_worker.shells.rtc.peer import FsmPeerConnection, create_peer_connection, install_rtc_patches
from fsm_worker.shells.rtc.session import (
    DEFAULT_LABEL,
    DEFAULT_SETUP_TIMEOUT,
    IncomingChannel,
    RtcSetupError,
    RtcSetupTimeout,
    accept_answer,
    create_answer,
    create_offer,
    wait_channel_open,
)

__all__ = [
    "DEFAULT_LABEL",
    "DEFAULT_SETUP_TIMEOUT",
    "FsmPeerConnection",
    "IceServerConfig",
    "IncomingChannel",
    "RtcOptions",
    "RtcSetupError",
    "RtcSetupTimeout",
    "accept_answer",
    "create_answer",
    "create_offer",
    "create_peer_connection",
    "disable_loopback_candidates",
    "enable_loopback_candidates",
    "install_rtc_patches",
    "loopback_candidates_enabled",
    "make_configuration",
    "wait_channel_open",
]
