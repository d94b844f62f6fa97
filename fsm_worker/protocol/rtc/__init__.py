"""Pure decision cores for the WebRTC data channel (no aiortc, no IO): the path-aware packet size."""
