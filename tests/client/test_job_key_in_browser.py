"""The browser recipe for a job key in docs/protocol.md ("The job key"), run as written in real headless Chromium:
its key and hash are what a worker expects (the same hash as the Python client's, accepted by the messages)."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web
from support.browser import chromium, needs_chromium
from support.signaling import free_port

from fsm_worker.protocol.client.job import job_key_sha256
from fsm_worker.protocol.messages import JobAssignment, JobRequest, parse_message

pytestmark = needs_chromium
PROTOCOL_MD = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def documented_snippet() -> str:
    """The one ```js block of the "The job key" section."""
    text = PROTOCOL_MD.read_text()
    section = text.split("## The job key\n", 1)[1].split("\n## ", 1)[0]
    (snippet,) = re.findall(r"```js\n(.*?)```", section, flags=re.DOTALL)
    return str(snippet)


async def blank_page(_: web.Request) -> web.Response:
    return web.Response(text="<!doctype html><title>job key</title>", content_type="text/html")


async def test_the_documented_browser_recipe_makes_a_key_and_hash_the_worker_accepts() -> None:
    body = documented_snippet() + "return [jobKey, jobKeySha256];"
    app = web.Application()  # a page on 127.0.0.1: a secure context, where crypto.subtle exists
    app.router.add_get("/", blank_page)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{port}/")
            pairs = [await page.evaluate(f"async () => {{ {body} }}") for _ in range(3)]
    finally:
        await runner.cleanup()
    keys = [key for key, _ in pairs]
    assert len(set(keys)) == 3  # a fresh key each time
    for key, digest in pairs:
        assert len(key) == 43 and re.fullmatch(r"[A-Za-z0-9_-]+", key), key
        assert digest == job_key_sha256(key)  # the SHA-256 of the key's UTF-8 bytes, lowercase hex
        wire = {"app_message_type": "job_request", "job_id": "j", "job_type": "t", "job_key_sha256": digest}
        assert parse_message(wire) == JobRequest("j", "t", job_key_sha256=digest)
        assert parse_message({"app_message_type": "job_assignment", "job_id": "j", "job_key": key}) == (
            JobAssignment("j", job_key=key)
        )
