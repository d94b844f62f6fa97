"""The file-transfer protocol over the data channel: frames (docs/transfer.md)."""
