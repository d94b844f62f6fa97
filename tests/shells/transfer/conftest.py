"""Fixtures for the transfer tests: real aiortc peers on loopback (helpers in ``support.rtc_links``)."""

from support.rtc_links import link, link_factory, tools

__all__ = ["link", "link_factory", "tools"]
