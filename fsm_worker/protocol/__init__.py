"""The pure protocol cores: typed messages, the worker's and client's job protocol, the transfer frames.

Nothing here does IO, awaits or sleeps: each core takes an event and the current time and returns instructions.
"""
