"""The live console's web server: the page and the JSON API of `console.py`, on tornado.

Tornado because mitmproxy already depends on it (mitmweb is built on it): no new dependency,
and its server runs on the asyncio event loop that already runs the proxy, so a request
handler reads and changes the sockets' state on the thread that owns them, with no lock and
no hand-over between threads.

Every request needs the console's token: ``?token=T`` (then a cookie carries it), or
``Authorization: Bearer T``; without it, 401. A request that changes something and carries
the token in the cookie must come from the console's own origin (a page on another port of
the same host is "same-site" for the cookie, not same-origin). The page's live feed
(``/api/events``) is a WebSocket; a page that reads slower than the feed grows is sent a
``resync`` (fetch afresh) instead of a growing backlog: the proxy never waits for a page.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import socket
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket
from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader

from . import layer
from .console import DEFAULT_KEEP, MAX_INPUT, Conflict, Console

__all__ = ["ConsoleAddon", "ConsoleServer", "parse_listen"]

logger = logging.getLogger(__name__)

PAGE = Path(__file__).resolve().parent / "console_page.html"
#: ``wsroute_console_pause_timeout``: seconds a message may stay paused.
DEFAULT_PAUSE_TIMEOUT = 120.0
#: How often the feed sends what changed (seconds): a burst of messages makes one frame.
FEED_INTERVAL = 0.05
#: Events a page may have waiting (it reads slowly) before it is told to fetch afresh.
MAX_BACKLOG = 5000
#: How often the pause timeout is checked (seconds).
TICK = 0.25
#: Largest request body: an edit or an injected message of `MAX_INPUT` bytes, as hex.
MAX_BODY = 2 * MAX_INPUT + 4096


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6; port 0: any free one).

    Raises:
        ValueError: not of that form, or the port is not 0-65535.
    """
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8082")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("write an IPv6 address in brackets, e.g. [::1]:8082")
    return host, int(port)


class ConsoleServer:
    """The console's HTTP server on the running event loop, serving `console`."""

    def __init__(self, console: Console, token: str) -> None:
        self.console = console
        self.token = token
        self.clients: set[_Events] = set()
        self.server: tornado.httpserver.HTTPServer | None = None
        self.url = ""
        self._flush_due: asyncio.TimerHandle | None = None
        self._tick: asyncio.TimerHandle | None = None
        self.page = PAGE.read_bytes()
        self.cookie = "wsroute_console"

    def start(self, host: str, port: int) -> str:
        """Listen on `host`:`port`; returns the URL with the token.

        Raises:
            OSError: cannot listen there.
        """
        sockets = tornado.netutil.bind_sockets(port, host, family=socket.AF_UNSPEC)
        port = sockets[0].getsockname()[1]
        self.cookie = f"wsroute_console_{port}"  # cookies are per host, not per port
        s = {"server": self}
        app = tornado.web.Application(
            [
                (r"/", _Page, s),
                (r"/api/sockets", _Sockets, s),
                (r"/api/sockets/([^/]+)/messages", _Messages, s),
                (
                    r"/api/sockets/([^/]+)/(send|close|drop|latency)",
                    _SocketAction,
                    {"server": self},
                ),
                (r"/api/breakpoints", _Breakpoints, s),
                (r"/api/breakpoints/([^/]+)", _Breakpoint, s),
                (r"/api/paused", _Paused, s),
                (r"/api/paused/([^/]+)", _Release, s),
                (r"/api/resume_all", _ResumeAll, s),
                (r"/api/events", _Events, s),
            ],
            default_handler_class=_NotFound,
            default_handler_args=s,
            log_function=_log_request,
            websocket_max_message_size=64 * 1024,
        )
        self.server = tornado.httpserver.HTTPServer(app, max_body_size=MAX_BODY)
        self.server.add_sockets(sockets)
        if host in ("", "0.0.0.0", "::"):
            logger.warning(
                f"wsroute: the console listens on every address ({host or '*'}:{port}): anyone "
                "who can reach it and has its token can read and change the traffic"
            )
            host = "127.0.0.1" if host != "::" else "::1"  # where this machine reaches it
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}/?token={self.token}"
        self.console.on_change = self._changed
        self._schedule_tick()
        return self.url

    def stop(self) -> None:
        """Stop listening, close the pages' feeds, release everything."""
        if self.server is not None:
            self.server.stop()
            self.server = None
        for client in list(self.clients):
            client.close(1001, "the console stops")
        self.clients.clear()
        self.console.listening = False
        self.console.on_change = None
        self.console.stop()
        for handle in (self._flush_due, self._tick):
            if handle is not None:
                handle.cancel()
        self._flush_due = self._tick = None

    # --- the token ------------------------------------------------------------------------------

    def authorized(self, handler: tornado.web.RequestHandler) -> tuple[bool, bool]:
        """Whether the request carries the token, and whether (only) in the cookie."""
        auth = handler.request.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and self._is_token(auth[7:].strip()):
            return True, False
        query = handler.get_query_argument("token", None)
        if query is not None and self._is_token(query):
            return True, False
        cookie = handler.get_cookie(self.cookie)
        return (cookie is not None and self._is_token(cookie)), True

    def _is_token(self, value: str) -> bool:
        return hmac.compare_digest(value.encode(), self.token.encode())

    # --- the feed -------------------------------------------------------------------------------

    def listen(self, client: _Events) -> None:
        self.clients.add(client)
        self.console.listening = True

    def leave(self, client: _Events) -> None:
        self.clients.discard(client)
        if not self.clients and self.server is not None:
            self.console.listening = False
            self.console.take_changes()  # nobody to tell any more
            self.console.pages_gone()

    def _changed(self) -> None:
        if self._flush_due is None:
            loop = asyncio.get_running_loop()
            self._flush_due = loop.call_later(FEED_INTERVAL, self._flush)

    def _flush(self) -> None:
        self._flush_due = None
        try:
            events = self.console.take_changes()
            if events:
                for client in list(self.clients):
                    client.push(events)
        except Exception:
            logger.exception("wsroute console: the live feed failed")

    def _schedule_tick(self) -> None:
        self._tick = asyncio.get_running_loop().call_later(TICK, self._on_tick)

    def _on_tick(self) -> None:
        try:
            self.console.expire()
        except Exception:
            logger.exception("wsroute console: releasing paused messages failed")
        if self.server is not None:
            self._schedule_tick()


def _log_request(handler: tornado.web.RequestHandler) -> None:
    request = handler.request
    logger.debug(f"wsroute console: {request.method} {request.path} {handler.get_status()}")


class _Handler(tornado.web.RequestHandler):
    """Every request: the token first, then JSON in and out, errors as ``{"error": ...}``."""

    server: ConsoleServer

    def initialize(self, server: ConsoleServer) -> None:
        self.server = server

    def check_xsrf_cookie(self) -> None:
        pass  # the token, not tornado's xsrf cookie, guards the API (see `prepare`)

    def prepare(self) -> None:
        ok, by_cookie = self.server.authorized(self)
        if not ok:
            self.fail(401, "the console's token is missing or wrong (open the URL it printed)")
            return
        if by_cookie and self.request.method not in ("GET", "HEAD"):
            origin = self.request.headers.get("Origin")
            if origin is not None and origin != f"{self.request.protocol}://{self.request.host}":
                self.fail(403, f"requests from {origin} are not allowed")

    def fail(self, status: int, error: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": error}))

    def reply(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(value))

    def body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            value = json.loads(self.request.body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"the body is not JSON: {e}") from None
        if not isinstance(value, dict):
            raise ValueError("the body must be a JSON object")
        return value

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": self._reason}))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, Conflict):
            self.fail(409, str(e))
        elif isinstance(e, LookupError):
            self.fail(404, str(e.args[0]) if e.args else "not found")
        elif isinstance(e, ValueError | TypeError):
            self.fail(400, str(e))
        elif isinstance(e, tornado.web.HTTPError):
            self.fail(e.status_code, e.log_message or e.reason or "error")
        else:
            logger.exception(f"wsroute console: {self.request.method} {self.request.path} failed")
            self.fail(500, f"the console failed: {type(e).__name__} (see the proxy's log)")


class _NotFound(_Handler):
    def get(self, *args: str) -> None:
        self.fail(404, f"no such endpoint: {self.request.path}")

    post = delete = get


class _Page(_Handler):
    def get(self) -> None:
        if self.get_query_argument("token", None) is not None:
            self.set_cookie(
                self.server.cookie, self.server.token, httponly=True, samesite="Strict", path="/"
            )
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'",
        )
        self.finish(self.server.page)


class _Sockets(_Handler):
    def get(self) -> None:
        self.reply(self.server.console.sockets_json())


def _int_arg(handler: tornado.web.RequestHandler, name: str) -> int | None:
    value = handler.get_query_argument(name, None)
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 18:
        raise ValueError(f"{name} must be a message id (digits), not {value!r}")
    return int(value)


class _Messages(_Handler):
    def get(self, id: str) -> None:
        watch = self.server.console.socket(id)
        after, before, limit = (_int_arg(self, n) for n in ("after", "before", "limit"))
        self.reply(watch.messages_json(after, before, limit))


class _SocketAction(_Handler):
    def post(self, id: str, action: str) -> None:
        watch = self.server.console.socket(id)
        body = self.body()
        if action == "send":
            watch.inject(body)
        elif action == "close":
            watch.close_side(body)
        elif action == "drop":
            watch.drop(body)
        else:
            watch.set_latency(body)
        self.reply({"ok": True})


class _Breakpoints(_Handler):
    def get(self) -> None:
        self.reply([b.to_json() for b in self.server.console.breakpoints.values()])

    def post(self) -> None:
        breakpoint = self.server.console.add_breakpoint(self.body())
        self.reply(breakpoint.to_json(), 201)


class _Breakpoint(_Handler):
    def delete(self, id: str) -> None:
        self.server.console.delete_breakpoint(id)
        self.reply({"ok": True})


class _Paused(_Handler):
    def get(self) -> None:
        self.reply(self.server.console.paused_json())


class _Release(_Handler):
    def post(self, id: str) -> None:
        self.server.console.release(id, self.body())
        self.reply({"ok": True})


class _ResumeAll(_Handler):
    def post(self) -> None:
        released = self.server.console.resume_all()
        self.reply({"ok": True, "released": released})


class _Events(tornado.websocket.WebSocketHandler):
    """The page's live feed: JSON arrays of events (`Console.take_changes`), after a
    ``hello`` with everything. Bounded per page: one frame in flight, what comes meanwhile
    waits, and past `MAX_BACKLOG` events it is dropped for one ``resync``."""

    server: ConsoleServer

    def initialize(self, server: ConsoleServer) -> None:
        self.server = server
        self.writing: asyncio.Future[None] | None = None
        self.backlog: list[dict[str, Any]] = []
        self.resync = False

    def prepare(self) -> None:
        ok, _ = self.server.authorized(self)
        if not ok:
            self.set_status(401)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"error": "the console's token is missing or wrong"}))

    def open(self, *args: str, **kwargs: str) -> None:
        self.server.listen(self)
        self._write([self.server.console.snapshot()])

    def on_message(self, message: str | bytes) -> None:
        pass  # the page only listens; it acts through the API

    def on_close(self) -> None:
        self.server.leave(self)

    def push(self, events: list[dict[str, Any]]) -> None:
        if self.writing is not None and not self.writing.done():
            if self.resync:
                return
            self.backlog.extend(events)
            if len(self.backlog) > MAX_BACKLOG:
                self.backlog = []
                self.resync = True
            return
        self._write(events)

    def _write(self, events: list[dict[str, Any]]) -> None:
        try:
            self.writing = self.write_message(json.dumps(events))
        except tornado.websocket.WebSocketClosedError:
            self.writing = None
            return
        self.writing.add_done_callback(self._written)

    def _written(self, future: asyncio.Future[None]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        if self.resync:
            self.resync = False
            self._write([{"type": "resync"}, self.server.console.snapshot()])
        elif self.backlog:
            events, self.backlog = self.backlog, []
            self._write(events)


class ConsoleAddon:
    """The ``wsroute_console`` options, the server's life, and which sockets it watches (held
    by `WsRoute`, whose ``request`` hook runs first: the route has decided by then)."""

    name = "wsroute_console"

    def __init__(self) -> None:
        self.token = secrets.token_urlsafe(24)
        self.console = Console()
        self.server: ConsoleServer | None = None
        self.listen: tuple[str, int] | None = None
        self._running = False

    @property
    def url(self) -> str | None:
        """``http://HOST:PORT/?token=T`` while the console runs."""
        return None if self.server is None else self.server.url

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "wsroute_console",
            str,
            "",
            "Serve the live console (a web page to watch routed sockets, pause messages at "
            'breakpoints, edit, inject, close) at HOST:PORT, e.g. "127.0.0.1:8082" (port 0: '
            "any free one). Its URL, with the token it requires, is logged. Empty: off.",
        )
        loader.add_option(
            "wsroute_console_pause_timeout",
            float,
            DEFAULT_PAUSE_TIMEOUT,
            "Seconds a message may stay paused at a console breakpoint before it goes on "
            "unchanged, with those waiting behind it. 0: until released.",
        )
        loader.add_option(
            "wsroute_console_keep",
            int,
            DEFAULT_KEEP,
            "Messages of each socket the console keeps for its page (the newest).",
        )

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if "wsroute_console_pause_timeout" in updated:
            timeout = opts.wsroute_console_pause_timeout
            if not timeout >= 0:
                raise exceptions.OptionsError(
                    f"Cannot parse wsroute_console_pause_timeout option {timeout}: "
                    "must be 0 (no timeout) or more"
                )
            self.console.pause_timeout = timeout
        if "wsroute_console_keep" in updated:
            keep = opts.wsroute_console_keep
            if keep < 1:
                raise exceptions.OptionsError(
                    f"Cannot parse wsroute_console_keep option {keep}: must be 1 or more"
                )
            self.console.keep = keep
        if "wsroute_console" in updated:
            value = opts.wsroute_console.strip()
            try:
                listen = parse_listen(value) if value else None
            except ValueError as e:
                raise exceptions.OptionsError(
                    f"Cannot parse wsroute_console option {value}: {e}"
                ) from e
            if listen != self.listen:
                self.listen = listen
                if self._running:
                    self._restart()

    def running(self) -> None:
        self._running = True
        self._restart()

    def done(self) -> None:
        self._running = False
        self._stop()

    def _stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
            logger.info("wsroute: the console stopped")

    def _restart(self) -> None:
        self._stop()
        if self.listen is None:
            return
        server = ConsoleServer(self.console, self.token)
        try:
            url = server.start(*self.listen)
        except OSError as e:
            logger.error(f"wsroute: cannot serve the console at {ctx.options.wsroute_console}: {e}")
            return
        self.server = server
        logger.info(f"console at {url}")

    def request(self, flow: http.HTTPFlow) -> None:
        if self.server is None:
            return
        socket = layer.routed_socket(flow)
        meta = flow.metadata.get("wsroute")
        if socket is None or not isinstance(meta, dict):
            return
        kind = meta.get("mode")
        if kind not in ("mock", "intercept"):
            return  # rejected: it never opens
        try:
            self.console.watch(socket.connection, kind, socket.connection.route)
        except Exception:
            logger.exception(f"wsroute console: cannot watch {socket.connection.url}")
