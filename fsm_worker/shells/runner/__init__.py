"""Runs job processes: a supervised subprocess in its own process group."""
