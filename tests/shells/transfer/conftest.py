"""Fixtures for the transfer tests: real aiortc peers on loopback (helpers in ``support.rtc_links``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from support.rtc_links import Link, Tools, open_link


@pytest.fixture
async def link_factory() -> AsyncIterator[Callable[[], Awaitable[Link]]]:
    """Opens links on demand and closes all of them at the end of the test."""
    links: list[Link] = []

    async def make() -> Link:
        link = await open_link()
        links.append(link)
        return link

    yield make
    for link in links:
        await link.close()


@pytest.fixture
async def link(link_factory: Callable[[], Awaitable[Link]]) -> Link:
    return await link_factory()


@pytest.fixture
def tools() -> Tools:
    return Tools()
