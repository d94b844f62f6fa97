"""Socket.IO signaling: the server (rooms per token, bound identities, discovery, Redis scale-out) and the
resilient client connection used by workers and job clients."""

from fsm_worker.signaling.client import SendResult, SendStatus, SignalingClient, SignalingError
from fsm_worker.signaling.config import ServerConfig
from fsm_worker.signaling.protocol import ErrorCode
from fsm_worker.signaling.server import RunningServer, SignalingServer, create_app, run_server, start_server

__all__ = [
    "ErrorCode",
    "RunningServer",
    "SendResult",
    "SendStatus",
    "ServerConfig",
    "SignalingClient",
    "SignalingError",
    "SignalingServer",
    "create_app",
    "run_server",
    "start_server",
]
