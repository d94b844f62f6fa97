"""Real headless Chromium for browser tests: Debian's `chromium` driven by the Python `playwright` package.

Never `playwright install`: the browser is the system's (`./run` apt-installs `chromium` when missing).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--no-sandbox",  # tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)

needs_chromium = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK), reason=f"{CHROMIUM} missing (./run test apt-installs chromium)"
)


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A fresh headless Chromium (its own empty profile), closed on exit."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=list(FLAGS))
        try:
            yield launched
        finally:
            await launched.close()
