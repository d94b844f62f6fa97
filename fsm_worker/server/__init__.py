"""The Socket.IO signaling server: rooms per token, bound identities, discovery, Redis scale-out."""
