"""The dashboard: a page at ``/`` behind the room token, fed live by server-sent events.

- ``GET /`` and ``GET /dashboard/static/{name}``: the page (HTML, CSS, JS of this package; nothing else).
- ``POST /dashboard/login`` ``{"token"}``: a valid room token starts a session (an HttpOnly cookie); the token
  is not kept, only the room it opens. ``POST /dashboard/logout`` ends it.
- ``GET /dashboard/events``: ``text/event-stream`` of the room's board (`fsm_worker.server.board`), one
  ``data:`` JSON object whenever it changes; 401 without a session.

The shell only reads the registry and streams; what is shown is decided by `RoomBoard`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from importlib import resources
from typing import TYPE_CHECKING

import attrs
from aiohttp import web

from fsm_worker.protocol.signaling import room_for_token
from fsm_worker.server.board import RoomBoard

if TYPE_CHECKING:
    from fsm_worker.server.server import SignalingServer

log = logging.getLogger(__name__)

COOKIE = "fsm_dashboard"
STATIC_FILES = {"index.html": "text/html", "dashboard.css": "text/css", "dashboard.js": "text/javascript"}
MAX_LOGIN_BYTES = 4096
#: Headers of every dashboard response: nothing is loaded from anywhere but this server.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@attrs.define
class _Session:
    room: str
    expires: float


class Dashboard:
    """Routes of the dashboard on the signaling server's aiohttp application."""

    def __init__(self, server: SignalingServer) -> None:
        self.server = server
        self.config = server.config
        self.sessions: dict[str, _Session] = {}
        self.boards: dict[str, RoomBoard] = {}
        self._closing = asyncio.Event()

    def attach(self, app: web.Application) -> None:
        app.router.add_get("/", self._page)
        app.router.add_get("/dashboard/static/{name}", self._static)
        app.router.add_post("/dashboard/login", self._login)
        app.router.add_post("/dashboard/logout", self._logout)
        app.router.add_get("/dashboard/events", self._events)
        app.on_shutdown.append(self._shutdown)

    async def _shutdown(self, _app: web.Application) -> None:
        self._closing.set()  # end the open feeds (browsers reconnect to the next server)

    # --- the page ---------------------------------------------------------------------------------------------

    async def _page(self, _request: web.Request) -> web.Response:
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        body = resources.files("fsm_worker.server").joinpath("static", name).read_bytes()
        return web.Response(body=body, content_type=STATIC_FILES[name], headers=SECURITY_HEADERS)

    # --- sessions ---------------------------------------------------------------------------------------------

    async def _login(self, request: web.Request) -> web.Response:
        raw = await request.content.read(MAX_LOGIN_BYTES + 1)
        try:
            body = json.loads(raw) if len(raw) <= MAX_LOGIN_BYTES else None
        except ValueError:
            body = None
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            return _error(
                400,
                "INVALID_LOGIN",
                f"send a JSON object {{'token': str}} of at most {MAX_LOGIN_BYTES} bytes",
            )
        room = room_for_token(token)
        if room not in self.server.rooms:
            return _error(401, "AUTH_FAILED", "invalid token")
        now = time.time()
        self._expire(now)
        if len(self.sessions) >= self.config.dashboard_max_sessions:
            return _error(
                503,
                "TOO_MANY_SESSIONS",
                f"dashboard_max_sessions ({self.config.dashboard_max_sessions}) logins are open; try later",
            )
        session_id = secrets.token_urlsafe(32)
        self.sessions[session_id] = _Session(room, now + self.config.dashboard_session_seconds)
        response = web.json_response({"ok": True}, headers=SECURITY_HEADERS)
        response.set_cookie(
            COOKIE,
            session_id,
            max_age=int(self.config.dashboard_session_seconds),
            httponly=True,
            samesite="Strict",
            path="/",
            secure=request.secure,  # over https (or a proxy that says so to aiohttp), never sent in clear
        )
        return response

    async def _logout(self, request: web.Request) -> web.Response:
        self.sessions.pop(request.cookies.get(COOKIE, ""), None)
        response = web.json_response({"ok": True}, headers=SECURITY_HEADERS)
        response.del_cookie(COOKIE, path="/")
        return response

    def _expire(self, now: float) -> None:
        for session_id in [s for s, session in self.sessions.items() if session.expires <= now]:
            del self.sessions[session_id]

    def _room_of(self, request: web.Request) -> str | None:
        session = self.sessions.get(request.cookies.get(COOKIE, ""))
        if session is None or session.expires <= time.time():
            return None
        return session.room

    # --- the live feed ----------------------------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.StreamResponse:
        room = self._room_of(request)
        if room is None:
            return _error(401, "AUTH_FAILED", "log in first (POST /dashboard/login)")
        response = web.StreamResponse(
            headers={**SECURITY_HEADERS, "Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        board = self.boards.setdefault(room, RoomBoard())
        sent = -1
        with contextlib.suppress(ConnectionResetError):
            while self._room_of(request) == room and not self._closing.is_set():
                try:
                    board.observe(await self.server.registry.peers(room), time.time())
                except Exception as exc:  # the registry is down: say so and keep trying
                    log.warning("dashboard: reading the room failed: %r", exc)
                if board.version != sent:
                    sent = board.version
                    data = json.dumps({"version": sent, **board.view()}, separators=(",", ":"))
                    await response.write(f"data: {data}\n\n".encode())
                else:
                    await response.write(b": keep-alive\n\n")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), self.config.dashboard_refresh_seconds)
        return response


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"ok": False, "code": code, "message": message}, status=status, headers=SECURITY_HEADERS
    )
