"""WebRTC peer setup (aiortc): configuration, loopback ICE candidates, offer/answer helpers."""

from fsm_worker.shells.rtc.config import IceServerConfig, make_configuration
from fsm_worker.shells.rtc.loopback import (
    disable_loopback_candidates,
    enable_loopback_candidates,
    loopback_candidates_enabled,
)
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
    "IceServerConfig",
    "IncomingChannel",
    "RtcSetupError",
    "RtcSetupTimeout",
    "accept_answer",
    "create_answer",
    "create_offer",
    "disable_loopback_candidates",
    "enable_loopback_candidates",
    "loopback_candidates_enabled",
    "make_configuration",
    "wait_channel_open",
]
