"""The mitmproxy addon: options, the route decision per WebSocket, and running user code.

In the ``request`` hook a WebSocket upgrade whose URL matches a route gets a `RoutedConnection`, and
the route handler runs (awaited when async) while mitmproxy holds the request. A handler that
called `connect_to_server()` lets the request go upstream (intercept); any other is a mock:
the addon answers the upgrade with its own 101, and no upstream connection is ever attempted.
From then on `layer.py` carries the socket.
"""

from __future__ import annotations

import asyncio
import difflib
import gc
import inspect
import logging
import textwrap
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Optional

from mitmproxy import ctx, exceptions, hooks, http
from mitmproxy.addonmanager import Loader
from mitmproxy.connection import Client
from mitmproxy.proxy import events
from mitmproxy.utils import asyncio_utils
from mitmproxy.websocket import WebSocketData

from . import handshake, harroute, layer, patches, socketio_polling, webview
from .addon_hooks import message_hooks
from .cassettes import check_record_mode
from .connection import (
    DEFAULT_MAX_BUFFER,
    SERVER,
    Accept,
    Opening,
    Reject,
    RoutedConnection,
    State,
)
from .console_web import ConsoleAddon
from .handshake import accept, is_websocket_upgrade, request_headers, requested_protocols
from .route import WebSocketRoute
from .router import Router
from .scripts import RouteScripts, user_traceback
from .urlmatch import parse_base_url, websocket_url

__all__ = ["WsRoute"]

logger = logging.getLogger(__name__)

#: How often route scripts are checked for changes, in seconds.
POLL_INTERVAL = 0.5
#: ``wsroute_max_message_size``: far above what applications send, far below what hurts.
DEFAULT_MAX_MESSAGE_SIZE = 128 * 1024 * 1024
#: ``wsroute_keep_messages``: enough for mitmweb to show a conversation, ~0.3 MiB of small ones.
DEFAULT_KEEP_MESSAGES = 1000
#: ``wsroute_close_timeout_ms``: how long a peer may take to answer our close frame.
DEFAULT_CLOSE_TIMEOUT_MS = 5000
#: mitmweb's flow-list markers of routed flows (🎭 for a mock, 🔌 for an intercept).
MOCK_MARKER = ":performing_arts:"
INTERCEPT_MARKER = ":electric_plug:"
#: How long the update hook for route-sent messages waits, so that a burst makes one update.
UPDATE_DELAY = 0.2

_frozen = False  # `_freeze_startup` ran in this process (once: a reloaded addon must not again)


class WsRoute:
    """Routes WebSockets through the route scripts of ``wsroute_scripts``."""

    def __init__(self) -> None:
        self.router = Router()
        self.scripts = RouteScripts(self.router)
        self._poller: asyncio.Task[None] | None = None
        #: Told of every exception a route, `on_message` or `on_close` handler raised, after
        #: it was logged (the test facade collects them).
        self.on_handler_error: Callable[[BaseException, http.HTTPFlow | None], None] | None = None
        self._updates_due: set[http.HTTPFlow] = set()
        self._proxyserver_addon: Any = None
        self._gc_decided = False  # ``wsroute_gc_freeze`` was read
        #: The live console (``wsroute_console``), an addon of its own that mitmproxy calls
        #: after this one: its ``request`` hook sees the route's decision.
        self.console = ConsoleAddon()
        self.addons = [self.console]

    def load(self, loader: Loader) -> None:
        webview.register()
        _add_option(
            loader,
            "wsroute_scripts",
            Sequence[str],
            [],
            """
            Route scripts: Python files that call route_web_socket(url, handler). May be passed
            several times; a later script's routes win. A changed script is reloaded for new
            sockets within a second; live sockets keep their handlers.
            """,
        )
        _add_option(
            loader,
            "wsroute_base_url",
            Optional[str],  # noqa: UP045 - mitmproxy wants typing.Optional
            None,
            """
            Playwright's baseURL for relative globs (e.g. "/ws"). http(s) is matched as ws(s).
            """,
        )

        _add_option(
            loader,
            "wsroute_max_message_size",
            int,
            DEFAULT_MAX_MESSAGE_SIZE,
            """
            Largest message a routed socket accepts from either side, in bytes (characters for
            text); a larger one closes that side with 1009 (message too big), checked while
            the message arrives. Each frame of a fragmented message but its last counts 2 bytes
            more, so that floods of empty frames are bounded too. 0 for no limit.
            """,
        )
        _add_option(
            loader,
            "wsroute_max_buffer",
            int,
            DEFAULT_MAX_BUFFER,
            """
            Bytes that may wait to be sent to one side of a routed socket (what routes sent
            that its peer has not read yet, the side's buffered_amount). Past it, the peer is
            taken as not reading: that side's connection is aborted and the socket fails with
            1011, logged with the route's name; other sockets carry on. Routes that send in a
            loop should await ws.drain(). 0 for no limit.
            """,
        )
        _add_option(
            loader,
            "wsroute_keep_messages",
            int,
            DEFAULT_KEEP_MESSAGES,
            """
            How many messages of a routed socket stay in its flow (what mitmweb shows and -w
            saves); older ones are dropped so that long-lived sockets do not grow without
            bound. The kept messages also hold at most 16 MiB of content (the newest message
            is always kept). 0 keeps all.
            """,
        )

        _add_option(
            loader,
            "wsroute_close_timeout_ms",
            int,
            DEFAULT_CLOSE_TIMEOUT_MS,
            """
            Milliseconds a side of a routed socket keeps its TCP connection after the proxy sent it
            a close frame, waiting for the peer's answer (RFC 6455 section 7.1.1: the closing
            handshake, after which clients report the close as clean). A peer that never
            answers has its connection closed then.
            """,
        )
        _add_option(
            loader,
            "wsroute_message_hooks",
            bool,
            True,
            """
            Fire mitmproxy's websocket_message hook for each message of a routed socket, so
            that other addons (and mitmdump's output) see it. Off, routed sockets skip it:
            faster (the hook reaches every loaded addon), but other addons no longer see, and
            cannot modify, their messages.
            """,
        )

        _add_option(
            loader,
            "wsroute_gc_freeze",
            bool,
            True,
            """
            Read once, when the addon is first configured: collect garbage, then exempt
            every object that exists then (Python's and mitmproxy's modules, the addons)
            from CPython's garbage collections (gc.freeze). The full collections that pause
            the proxy then walk only what came later, mostly the sockets: with many sockets
            open they pause it half as long. Nothing else changes, but the setting is the
            whole process's: off when the proxy runs inside another program (the test API
            turns it off).
            """,
        )

        loader.add_option(
            "wsroute_har",
            Optional[str],  # type: ignore[arg-type]  # noqa: UP045 - mitmproxy wants typing.Optional
            None,
            """
            Replay the WebSocket conversations of this HAR file as mocks (route_from_har), or
            record into it with wsroute_har_update. Its route wins over the scripts' routes.
            """,
        )
        loader.add_option(
            "wsroute_har_update",
            bool,
            False,
            """
            Record instead of replaying: matching sockets connect to their server, and their
            conversations are written to wsroute_har when each socket ends and at exit.
            """,
        )
        loader.add_option(
            "wsroute_har_url",
            Optional[str],  # type: ignore[arg-type]  # noqa: UP045 - mitmproxy wants typing.Optional
            None,
            """
            Only sockets whose URL matches this glob are replayed or recorded (default: all).
            """,
        )
        loader.add_option(
            "wsroute_har_not_found",
            str,
            "abort",
            """
            A matching socket whose URL has no entry in wsroute_har: "abort" refuses its upgrade
            with 404, "fallback" leaves it to the scripts' routes (else it passes through).
            """,
            choices=["abort", "fallback"],
        )
        loader.add_option(
            "wsroute_har_timing",
            str,
            "none",
            """
            "recorded" keeps the recorded gap before each replayed server message; "none"
            sends at once.
            """,
            choices=["none", "recorded"],
        )
        loader.add_option(
            "wsroute_record_mode",
            Optional[str],  # type: ignore[arg-type]  # noqa: UP045 - mitmproxy wants typing.Optional
            None,
            """
            Record mode of every route_from_har (wsroute_har and the scripts' calls), winning
            over their own: "none" replays only, "once" records a missing file and replays an
            existing one, "new_episodes" replays what matches and records the rest, "all"
            records (vcrpy's names).
            """,
        )
        _add_option(
            loader,
            "wsroute_har_max_size",
            int,
            harroute.MAX_SIZE,
            """
            Largest HAR file that wsroute_har reads, in bytes (for a .zip, the HAR inside it,
            uncompressed): a larger one is refused before it is read. 0 for no limit.
            """,
        )
        _add_option(
            loader,
            "wsroute_har_max_attached_size",
            int,
            harroute.MAX_ATTACHED_SIZE,
            """
            Most bytes the message files attached to wsroute_har (Playwright's .jsonl files,
            beside the .har or in its .zip, uncompressed) may hold together; each is checked
            before it is read. 0 for no limit.
            """,
        )

    def configure(self, updated: set[str]) -> None:
        _check_option_names(ctx.options)
        if "scripts" in updated:  # mitmproxy's scripts, reordered: so are their hooks
            patches.chain_changed(ctx.master.addons)
        if "wsroute_gc_freeze" in updated and not self._gc_decided:  # read once
            self._gc_decided = True
            if ctx.options.wsroute_gc_freeze:
                _freeze_startup()
        for name, zero in (
            ("wsroute_max_message_size", " (no limit)"),
            ("wsroute_max_buffer", " (no limit)"),
            ("wsroute_keep_messages", " (keep all)"),
            ("wsroute_close_timeout_ms", ""),
        ):
            if name in updated and getattr(ctx.options, name) < 0:
                raise exceptions.OptionsError(
                    f"Cannot parse {name} option {getattr(ctx.options, name)}: "
                    f"must be 0{zero} or more"
                )
        record_mode = ctx.options.wsroute_record_mode or None
        if "wsroute_record_mode" in updated:
            try:
                check_record_mode(record_mode, "wsroute_record_mode")
            except ValueError as e:
                raise exceptions.OptionsError(
                    f"Cannot parse wsroute_record_mode option {record_mode}: {e}"
                ) from e
        if updated.intersection(("wsroute_scripts", "wsroute_base_url", "wsroute_record_mode")):
            base_url = ctx.options.wsroute_base_url
            try:
                base_url = parse_base_url(base_url) if base_url else None
            except ValueError as e:
                raise exceptions.OptionsError(
                    f"Cannot parse wsroute_base_url option {base_url}: {e}"
                ) from e
            try:
                self.scripts.configure(list(ctx.options.wsroute_scripts), base_url, record_mode)
            except ValueError as e:
                raise exceptions.OptionsError(f"Cannot load wsroute_scripts: {e}") from e
        if updated.intersection(_HAR_OPTIONS) or "wsroute_base_url" in updated:
            self._configure_har()
        if ctx.options.connection_strategy != "lazy":
            # Eager connects go upstream (and do TLS) before the URL is known, so a mock of a
            # host that does not exist would fail with 502.
            logger.info("wsroute: setting connection_strategy=lazy, so that mocks never connect")
            ctx.options.update(connection_strategy="lazy")

    def _configure_har(self) -> None:
        opts = ctx.options
        if not opts.wsroute_har:
            self.router.option_routes = ()
            return
        try:
            base_url = parse_base_url(opts.wsroute_base_url) if opts.wsroute_base_url else None
            cassette = harroute.Cassette(
                opts.wsroute_har,
                url=opts.wsroute_har_url or None,
                not_found=opts.wsroute_har_not_found,
                update=opts.wsroute_har_update,
                timing=opts.wsroute_har_timing,
                max_size=opts.wsroute_har_max_size,
                max_attached_size=opts.wsroute_har_max_attached_size,
                base_url=base_url,
                origin="wsroute_har option",
                record_mode_override=opts.wsroute_record_mode or None,
            )
        except ValueError as e:
            raise exceptions.OptionsError(f"Cannot load wsroute_har option: {e}") from e
        self.router.option_routes = tuple(cassette.routes)
        what = {"all": "recording into", "none": "replaying"}.get(cassette.mode, "new episodes in")
        logger.info(f"wsroute: {what} {opts.wsroute_har}")

    def running(self) -> None:
        _check_option_names(ctx.options)  # in case a --set came after the last configure
        patches.install()
        self.scripts.failure_level = logging.ERROR
        if self._poller is None:
            self._poller = asyncio_utils.create_task(
                self._poll(), name="wsroute script watcher", keep_ref=True
            )

    def done(self) -> None:
        harroute.flush_recordings()
        if _frozen:  # this addon may be being unloaded: what it holds must be collectable
            gc.unfreeze()
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            self.scripts.poll()

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        if not is_websocket_upgrade(flow.request) or not ctx.options.websocket:
            if socketio_polling.is_polling(flow.request):  # a route_socket_io mock answers it
                await socketio_polling.request(flow, self.router, self._socketio_error)
            return
        req = flow.request
        url = websocket_url(req.scheme, req.pretty_host, req.port, req.path)
        route = self.router.find(url)
        if route is None:
            return
        connection = RoutedConnection(
            url,
            requested_protocols(req),
            request_headers(req),
            route=route.label,
            max_buffer=ctx.options.wsroute_max_buffer,
        )
        socket = layer.RoutedSocket(
            connection,
            self._call_user,
            self._inject,
            on_update=self._flow_updated,
            update_soon=self._flow_updated_soon,
            proxyserver=self._proxyserver(),
        )
        if ctx.options.wsroute_message_hooks:
            # other addons' hooks called by the layer itself, when it can (all synchronous)
            socket.hooks = message_hooks(ctx.master.addons, self)
        layer.routed_socket(flow, socket)
        flow.metadata["wsroute"] = {"url": url, "route": route.origin}
        try:
            result = route.handler(WebSocketRoute(connection))
            if inspect.isawaitable(result):
                await self._until_answered(result, socket, url)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # SystemExit too: user code never stops the proxy
            if isinstance(e, asyncio.CancelledError) and _cancelling():
                raise  # the proxy itself is stopping
            # a handler that raised or was cancelled: the client is closed with 1011
            self._route_handler_failed(e, socket, url, cut_at="request")
        finally:
            connection.wakeup = socket.wake
        connection.handler_returned()
        # mitmweb shows a marker per kind in the flow list, and the route in the comment.
        flow.comment = f"wsroute: {route.label}"
        if isinstance(connection.answer, Reject):
            flow.metadata["wsroute"]["mode"] = "rejected"
            flow.marked = MOCK_MARKER
            flow.response = handshake.reject(connection.answer)
            return
        if connection.states[SERVER] is State.CONNECTING:
            flow.metadata["wsroute"]["mode"] = "intercept"
            flow.marked = INTERCEPT_MARKER
            return
        flow.metadata["wsroute"]["mode"] = "mock"
        flow.marked = MOCK_MARKER
        answer = connection.answer if isinstance(connection.answer, Accept) else None
        flow.response = accept(req, connection.protocols, answer)

    async def _until_answered(
        self, result: Awaitable[Any], socket: layer.RoutedSocket, url: str
    ) -> None:
        """Await an async route handler until it returns, or until it answered the client with
        `accept()` or `reject()`: then the answer goes out and the handler goes on by itself,
        as one of the socket's tasks (cancelled when the socket ends). A handler still running
        once its socket is rejected, or once its client left before the socket opened, is
        cancelled: no relay would ever end it."""
        connection = socket.connection
        answered = asyncio.Event()
        connection.wakeup = answered.set  # called by accept() and reject() (and by sends)

        async def route_handler() -> None:
            try:
                await result
            except KeyboardInterrupt:
                raise
            except BaseException as e:  # contained, as in `request`
                if isinstance(e, asyncio.CancelledError) and _cancelling():
                    raise  # its socket ended, or the proxy stops
                self._route_handler_failed(e, socket, url, cut_at="route_handler")

        task = asyncio_utils.create_task(
            route_handler(), name=f"wsroute handler {url}", keep_ref=True
        )
        if not task.done():
            socket.tasks.add(task)
            task.add_done_callback(socket.tasks.discard)
            _watch_client(socket)
        try:
            while not task.done() and connection.opening is Opening.HANDLER:
                answered.clear()
                waiter = asyncio.ensure_future(answered.wait())
                try:
                    await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
        except asyncio.CancelledError:
            task.cancel()  # the proxy stops
            raise
        if connection.opening is Opening.REJECTED:
            task.cancel()  # the socket never opens

    def _route_handler_failed(
        self, e: BaseException, socket: layer.RoutedSocket, url: str, cut_at: str
    ) -> None:
        logger.error(f"{url}: route handler failed:\n{user_traceback(e, cut_at)}")
        self._handler_failed(e, socket)
        socket.connection.receive_handler_error(e)

    def _socketio_error(self, error: BaseException) -> None:
        if self.on_handler_error is not None:
            self.on_handler_error(error, None)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        socket = layer.routed_socket(flow)
        if (
            socket is not None
            and flow.response is not None
            and flow.response.status_code == 101
            and socket.connection.states[SERVER] is State.CONNECTING
        ):  # an intercept's upstream accepted: what it agreed on, before other addons' hooks
            socket.upstream_extensions = flow.response.headers.get("Sec-WebSocket-Extensions", "")

    def response(self, flow: http.HTTPFlow) -> None:
        if "wsroute_socketio" in flow.metadata:  # an intercepted Socket.IO polling handshake
            socketio_polling.response(flow)
        socket = layer.routed_socket(flow)
        if socket is None or flow.websocket is not None or flow.response is None:
            return
        if socket.connection.states[SERVER] is not State.CONNECTING:
            return  # not an intercept waiting for its upstream
        # An intercepted socket whose upstream refused the upgrade.
        if socket.connection.receive_upstream_failed():
            logger.info(
                f"{socket.connection.url}: upstream answered {flow.response.status_code}, "
                "the route's server-side on_close takes over"
            )
            flow.response = accept(flow.request, socket.connection.protocols)
            flow.websocket = WebSocketData()
            flow.metadata["wsroute"]["mode"] = "mock (upstream failed)"

    def _flow_updated(self, flow: http.HTTPFlow) -> None:
        """Tell other addons that `flow` changed (mitmproxy's ``update`` hook). A socket whose
        layer calls the hooks itself calls the same ``update`` handlers as after each message
        (none in mitmdump), else mitmproxy walks every addon."""
        socket = layer.routed_socket(flow)
        if socket is None or socket.hooks is None:
            ctx.master.addons.trigger(hooks.UpdateHook([flow]))
        else:
            socket.hooks.updated(flow)

    def _flow_updated_soon(self, flow: http.HTTPFlow) -> None:
        """`_flow_updated`, at most once per `UPDATE_DELAY` and flow."""
        if flow in self._updates_due:
            return
        socket = layer.routed_socket(flow)
        if socket is not None and socket.hooks is not None and not socket.hooks.update:
            return  # no addon has an update hook: nothing to schedule
        self._updates_due.add(flow)
        asyncio.get_running_loop().call_later(UPDATE_DELAY, self._update_due, flow)

    def _update_due(self, flow: http.HTTPFlow) -> None:
        self._updates_due.discard(flow)
        self._flow_updated(flow)

    def _proxyserver(self) -> Any:
        """mitmproxy's ``proxyserver`` addon, looked up once: a lookup walks every addon."""
        if self._proxyserver_addon is None:
            self._proxyserver_addon = ctx.master.addons.get("proxyserver")
        return self._proxyserver_addon

    def _inject(self, event: events.MessageInjected[Any]) -> None:
        self._proxyserver().inject_event(event)

    def _call_user(
        self, handler: Callable[..., Any], args: tuple[Any, ...], socket: layer.RoutedSocket
    ) -> asyncio.Task[None] | None:
        """Run a handler of `socket`; what it raises (`SystemExit` too, not `KeyboardInterrupt`)
        is logged and contained. An awaitable result runs in a task, which is returned."""
        try:
            result = handler(*args)
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            url = socket.connection.url
            logger.error(
                f"{url}: handler {_name(handler)} failed:\n{user_traceback(e, '_call_user')}"
            )
            self._handler_failed(e, socket)
            return None
        if result is not None and inspect.isawaitable(result):  # per message: None is common
            url = socket.connection.url
            return asyncio_utils.create_task(
                self._await_user(result, handler, url, socket),
                name=f"wsroute {url}",
                keep_ref=True,
            )
        return None

    async def _await_user(
        self,
        result: Awaitable[Any],
        handler: Callable[..., Any],
        url: str,
        socket: layer.RoutedSocket,
    ) -> None:
        try:
            await result
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError) and _cancelling():
                raise  # its socket ended (or the proxy stops): the task ends quietly
            logger.error(
                f"{url}: handler {_name(handler)} failed:\n{user_traceback(e, '_await_user')}"
            )
            self._handler_failed(e, socket)

    def _handler_failed(self, error: BaseException, socket: layer.RoutedSocket) -> None:
        """Tell `on_handler_error`, with the socket's flow (None once it is gone)."""
        if self.on_handler_error is not None:
            self.on_handler_error(error, socket.flow())

    def client_disconnected(self, client: Client) -> None:
        """mitmproxy's hook: see `_client_left`."""
        _client_left(client.id)


def _add_option(loader: Loader, name: str, typespec: Any, default: Any, help: str) -> None:
    """`Loader.add_option`, with the help text as mitmproxy stores it: then reloading the
    addon script finds the same option and keeps its value (with another text, mitmproxy
    replaces the option, and ``--set`` values are lost)."""
    loader.add_option(name, typespec, default, textwrap.dedent(help).strip().replace("\n", " "))


def _cancelling() -> bool:
    """Whether the running task is being cancelled (rather than user code raising
    `CancelledError` of its own)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _name(handler: Callable[..., Any]) -> str:
    return getattr(handler, "__qualname__", repr(handler))


#: The options of `route_from_har` (any of them changed: its route is made again).
_HAR_OPTIONS = (
    "wsroute_har",
    "wsroute_har_update",
    "wsroute_har_url",
    "wsroute_har_not_found",
    "wsroute_har_timing",
    "wsroute_har_max_size",
    "wsroute_har_max_attached_size",
    "wsroute_record_mode",
)


def _freeze_startup() -> None:
    """``wsroute_gc_freeze``: once per process, before any route script or socket exists.
    What is frozen is never collected, so nothing whose life ends before the process's may be:
    at start-up that is modules, options and addons; a reload of this addon unfreezes
    (`WsRoute.done`), and nothing freezes again."""
    global _frozen
    if _frozen:
        return
    _frozen = True
    gc.collect()
    gc.freeze()
    logger.debug(f"wsroute: {gc.get_freeze_count()} objects frozen (wsroute_gc_freeze)")


def _check_option_names(options: Any) -> None:
    """Refuse a ``wsroute_`` option that no addon registered: mitmproxy keeps an unknown
    ``--set`` back without a word (for an addon that may register it later), so a mistyped
    option would do nothing. Options of other addons are theirs to check.

    Raises:
        exceptions.OptionsError: naming the closest real ``wsroute_`` option.
    """
    unknown = sorted(name for name in options.deferred if name.startswith("wsroute_"))
    if not unknown:
        return
    ours = [name for name in options.keys() if name.startswith("wsroute_")]
    problems = []
    for name in unknown:
        close = difflib.get_close_matches(name, ours, n=1)
        hint = f"did you mean {close[0]}?" if close else "mitmdump --options lists them all"
        problems.append(f"Unknown option {name}; {hint}")
    raise exceptions.OptionsError(" ".join(problems))


#: The routed socket of each client whose async route handler ran before the socket opened, by
#: mitmproxy's client id, for `WsRoute.client_disconnected`; weakly: it lives with its flow.
_unopened: weakref.WeakValueDictionary[str, layer.RoutedSocket] = weakref.WeakValueDictionary()


def _watch_client(socket: layer.RoutedSocket) -> None:
    """Have `socket`'s async handlers cancelled if its client leaves before the socket opens."""
    flow = socket.flow()
    if flow is None:
        return
    _unopened[flow.client_conn.id] = socket


def _client_left(client_id: str) -> None:
    """The client left: the async route handlers of its socket are cancelled if the socket
    never opened (once open, its relay cancels them when it ends)."""
    socket = _unopened.pop(client_id, None)
    if socket is not None and not socket.layer_started:
        for task in list(socket.tasks):
            task.cancel()
