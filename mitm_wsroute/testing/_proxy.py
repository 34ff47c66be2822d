"""A real mitmproxy with the addon, on its own thread and event loop: the engine behind both
test APIs. Route handlers run on that loop; the test's thread only reads records and waits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from mitmproxy import addons as mitmproxy_addons
from mitmproxy import exceptions, http, master, options
from mitmproxy.addonmanager import Loader
from mitmproxy.utils import asyncio_utils

from mitm_wsroute import harroute, layer, patches
from mitm_wsroute.addon import WsRoute
from mitm_wsroute.connection import PAGE, SERVER, RoutedConnection, State, reported_code
from mitm_wsroute.handshake import is_websocket_upgrade
from mitm_wsroute.route import WebSocketRoute
from mitm_wsroute.router import Route, RouteHandler, registrar
from mitm_wsroute.urlmatch import URLMatch, parse_base_url, websocket_url

from ._records import Hub, SocketRecord

__all__ = ["ProxyEngine"]

logger = logging.getLogger(__name__)

#: Default bounds of what the record keeps per socket: a test's worth.
RECORD_MESSAGES = 100_000
RECORD_BYTES = 64 * 1024 * 1024
START_TIMEOUT = 30.0
#: Where a WebSocket's flow keeps which `reset` period its upgrade came in.
GENERATION = "wsroute_test_generation"
#: How sockets still open at `reset` are closed: going away (1001), as a browser's page.
RESET_CLOSE = (1001, "the test proxy was reset")


#: The record of each routed socket, by its connection (for what routes report about it).
_by_connection: weakref.WeakKeyDictionary[RoutedConnection, SocketRecord] = (
    weakref.WeakKeyDictionary()
)


def _unmatched(ws: WebSocketRoute, message: str | bytes) -> None:
    record = _by_connection.get(ws._connection)
    if record is not None:
        with record.hub.lock:
            record.unmatched.append(message)


harroute.on_unmatched = _unmatched


class _Recorder:
    """Records every WebSocket that reaches the proxy, routed or not, as its client sees it.

    Routed sockets are recorded through the layer's observer (which also sees what routes
    send); the others through mitmproxy's WebSocket hooks. Added after `WsRoute`, so its
    ``request`` hook runs once the route decided."""

    def __init__(self, engine: ProxyEngine) -> None:
        self.engine = engine
        self.records: weakref.WeakKeyDictionary[http.HTTPFlow, SocketRecord] = (
            weakref.WeakKeyDictionary()
        )

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "wsroute_record_messages",
            int,
            RECORD_MESSAGES,
            "Test proxy: messages of one socket kept for inspection; the oldest are forgotten.",
        )
        loader.add_option(
            "wsroute_record_bytes",
            int,
            RECORD_BYTES,
            "Test proxy: payload bytes of one socket kept for inspection.",
        )

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Before any route runs: which test the socket belongs to (see `ProxyEngine.reset`)."""
        if is_websocket_upgrade(flow.request):
            with self.engine.hub.lock:
                flow.metadata[GENERATION] = self.engine.generation

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.error or not is_websocket_upgrade(flow.request):
            return
        req = flow.request
        meta = flow.metadata.get("wsroute") or {}
        socket = layer.routed_socket(flow)
        opts = self.engine.options
        record = SocketRecord(
            self.engine.hub,
            meta.get("url") or websocket_url(req.scheme, req.pretty_host, req.port, req.path),
            list(req.headers.items(multi=True)),
            "intercept" if meta.get("mode") == "intercept" else "mock" if meta else None,
            None if socket is None else WebSocketRoute(socket.connection),
            opts.wsroute_record_messages or 2**62,
            opts.wsroute_record_bytes or 2**62,
        )
        if socket is not None:
            socket.observer = record
            _by_connection[socket.connection] = record
        self.records[flow] = record
        self.engine.add_socket(record, flow.metadata.get(GENERATION))

    def response(self, flow: http.HTTPFlow) -> None:
        record = self.records.get(flow)
        if record is None or flow.response is None:
            return
        if flow.response.status_code == 101:
            record.opened(flow.response.headers.get("sec-websocket-protocol"))
        else:
            record.closed(1006, "")  # the handshake failed: a browser reports 1006

    def error(self, flow: http.HTTPFlow) -> None:
        record = self.records.get(flow)
        if record is not None:
            record.closed(1006, "")

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        record = self.records.get(flow)
        if record is None or layer.routed_socket(flow) is not None:
            return  # routed sockets are recorded by the layer's observer
        assert flow.websocket is not None  # make type checker happy
        m = flow.websocket.messages[-1]
        payload = m.text if m.is_text else m.content
        if m.from_client and not m.injected:
            record.message(True, payload)
        elif not m.from_client and not m.dropped:
            record.message(False, payload)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        record = self.records.get(flow)
        if record is None or flow.websocket is None:
            return
        code = flow.websocket.close_code
        record.closed(reported_code(code), flow.websocket.close_reason or "")


class ProxyEngine:
    """mitmproxy's master, `WsRoute` and the recorder, run by a thread of their own."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        mode: str = "regular",
        scripts: Sequence[str | os.PathLike[str]] = (),
        options: dict[str, Any] | None = None,
        confdir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.host = host
        self._port = port
        self.mode = mode
        self.scripts = [os.fspath(s) for s in scripts]
        self.extra_options = dict(options or {})
        self._own_confdir = confdir is None
        self.confdir = Path(confdir) if confdir is not None else None
        self.hub = Hub()
        self.sockets: list[SocketRecord] = []
        #: How many sockets were ever recorded (`reset` does not change it).
        self.socket_total = 0
        #: The sockets `wait_for_web_socket` returned already.
        self.returned: set[int] = set()
        self.handler_errors: list[BaseException] = []
        #: How many times `reset` ran: sockets whose upgrade came before the last belong to an
        #: earlier test.
        self.generation = 0
        self.state: Literal["new", "running", "stopped"] = "new"
        self.port = 0
        self.wsroute = WsRoute()
        self.wsroute.on_handler_error = self._handler_failed
        self.base_url: str | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._master: master.Master | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self.state != "new":
            raise RuntimeError(f"this proxy was already {self.state}; make a new WsRouteProxy")
        patches.share_ctx_per_thread()
        if self._own_confdir:
            self.confdir = Path(tempfile.mkdtemp(prefix="mitm-wsroute-"))
        self._thread = threading.Thread(target=self._run, name="wsroute proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            self._failure = RuntimeError(f"the proxy did not start within {START_TIMEOUT} s")
        if self._failure is not None:
            self.stop()
            self.state = "stopped"
            raise self._failure
        self.state = "running"

    def stop(self) -> None:
        """Stop the proxy, close its connections, end its thread, remove its temporary CA."""
        if self._master is not None and self._loop is not None and not self._loop.is_closed():
            try:
                self._master.shutdown()
            except RuntimeError:
                pass  # the loop closed meanwhile
        if self._thread is not None:
            self._thread.join(START_TIMEOUT)
            self._thread = None
        self.hub.close()
        if self._own_confdir and self.confdir is not None:
            shutil.rmtree(self.confdir, ignore_errors=True)
        self.state = "stopped"

    def check_running(self) -> None:
        if self.state != "running":
            what = "not started yet (use start() or `with`)" if self.state == "new" else "stopped"
            raise RuntimeError(f"the proxy is {what}")

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:
            if not self._ready.is_set():
                self._failure = e
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.hub.proxy_thread = threading.get_ident()
        errors = _ThreadErrors()
        logging.getLogger().addHandler(errors)
        try:
            m = self._master = master.Master(options.Options(), event_loop=self._loop)
            m.addons.add(*mitmproxy_addons.default_addons(), self.wsroute, _Recorder(self))
            self._configure(m)
            with (
                asyncio_utils.install_exception_handler(m._asyncio_exception_handler),
                asyncio_utils.set_eager_task_factory(),
            ):
                proxyserver = m.addons.get("proxyserver")
                if not await proxyserver.setup_servers():
                    raise RuntimeError(f"the proxy could not start: {errors.text()}")
                self.port = int(proxyserver.listen_addrs()[0][1])
                await m.running()
                logging.getLogger().removeHandler(errors)
                self._ready.set()
                try:
                    await m.should_exit.wait()
                finally:
                    await proxyserver.servers.update([])
                    await m.done()
        finally:
            logging.getLogger().removeHandler(errors)

    def _configure(self, m: master.Master) -> None:
        assert self.confdir is not None
        settings = {
            "listen_host": self.host,
            "listen_port": self._port,
            "mode": [self.mode],
            "confdir": str(self.confdir),
            "wsroute_scripts": self.scripts,
            "wsroute_gc_freeze": False,  # the process is the test's, not the proxy's
            **self.extra_options,
        }
        try:
            m.options.update(**settings)
        except KeyError as e:
            raise ValueError(f"unknown proxy option: {e.args[0]}") from None
        except exceptions.OptionsError as e:
            raise ValueError(str(e)) from None
        base_url = m.options.wsroute_base_url
        self.base_url = parse_base_url(base_url) if base_url else None

    # --- for the APIs -----------------------------------------------------------------------

    @property
    def options(self) -> options.Options:
        assert self._master is not None
        return self._master.options

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ca_cert(self) -> Path:
        assert self.confdir is not None
        return self.confdir / "mitmproxy-ca-cert.pem"

    def env(self) -> dict[str, str]:
        env = {}
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            env[name] = env[name.lower()] = self.url
        env["NO_PROXY"] = env["no_proxy"] = ""
        for name in (
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "NODE_EXTRA_CA_CERTS",
            "CURL_CA_BUNDLE",
        ):
            env[name] = str(self.ca_cert)
        return env

    def route(
        self, url: URLMatch, handler: RouteHandler | None
    ) -> Callable[[RouteHandler], RouteHandler] | None:
        return registrar(url, handler, self.base_url, self._add_route)

    def _add_route(self, route: Route) -> None:
        self.wsroute.router.add(route)

    def route_from_har(self, har: str | os.PathLike[str], **options: Any) -> harroute.Cassette:
        cassette = harroute.Cassette(
            har,
            base_url=self.base_url,
            origin=f"route_from_har({os.fspath(har)!r})",
            record_mode_override=self.options.wsroute_record_mode or None,
            **options,
        )
        for route in cassette.routes:
            self._add_route(route)
        return cassette

    def unroute(self, url: URLMatch | None, handler: RouteHandler | None = None) -> None:
        self.wsroute.router.remove(url, handler)

    def add_socket(self, record: SocketRecord, generation: int | None = None) -> None:
        with self.hub.lock:
            if generation not in (None, self.generation):
                record.detach()  # its upgrade came before `reset`: an earlier test's socket
                return
            record.seq = self.socket_total
            self.socket_total += 1
            self.sockets.append(record)
            self.hub.changed()

    def _handler_failed(self, error: BaseException, flow: http.HTTPFlow | None) -> None:
        with self.hub.lock:
            if (
                flow is not None
                and flow.metadata.get(GENERATION, self.generation) != self.generation
            ):
                logger.debug(
                    f"not a handler error of this test (its socket came before reset()): {error!r}"
                )
                return
            self.handler_errors.append(error)

    def reset(self) -> None:
        """Unroute, forget sockets and errors, and let go of the sockets of the test before:
        routed ones still open are closed (1001), and nothing of theirs (handler errors,
        events) reaches the test after."""
        self.unroute(None)
        with self.hub.lock:
            stale = self.sockets
            self.generation += 1
            self.sockets = []
            self.returned = set()
            self.handler_errors = []
            for record in stale:
                record.detach()
            self.hub.changed()
        routes = [r.route for r in stale if r.route is not None and r.close is None]
        if routes and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(_go_away, routes)
            except RuntimeError:
                pass  # the proxy stopped: its sockets are gone


def _go_away(routes: list[WebSocketRoute]) -> None:
    """Close both sides of routed sockets that are still open (on the proxy's thread): the
    client also while its socket opens (as a route handler may), the upstream once open."""
    code, reason = RESET_CLOSE
    for route in routes:
        connection = route._connection
        try:
            if connection.states[PAGE] in (State.CONNECTING, State.OPEN):
                route.close(code=code, reason=reason)
            if connection.states[SERVER] is State.OPEN:  # not closed by the page's close
                WebSocketRoute(connection, SERVER).close(code=code, reason=reason)
        except Exception as e:
            logger.debug(f"{connection.url}: not closed at reset(): {e!r}")


class _ThreadErrors(logging.Handler):
    """Collects the errors logged by this thread while the proxy starts: mitmproxy's reason."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())

    def text(self) -> str:
        return "; ".join(self.messages) or "no reason logged"
