"""What the addon changes in mitmproxy, at start (`install`): its `WebsocketLayer` becomes
`layer.RoutedWebsocketLayer` for every WebSocket (a flow without a route runs mitmproxy's own
code, untouched), `HttpStream.make_server_connection` lets a route take over when the
upstream cannot be reached, and `AddonManager.register` and ``remove`` tell the routed
sockets that the addon chain changed (`chain_changed`). `check_internals` refuses to run on a
mitmproxy whose internals moved. `share_ctx_per_thread` lets the test API run several masters
in one process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import types
from typing import Any, ClassVar

from mitmproxy import websocket
from mitmproxy.addonmanager import AddonManager
from mitmproxy.proxy import layer
from mitmproxy.proxy.layers import websocket as wsl
from mitmproxy.proxy.layers.http import GetHttpConnection, HttpStream
from mitmproxy.proxy.layers.http._hooks import HttpResponseHeadersHook
from wsproto.frame_protocol import Opcode

from . import own_io
from .connection import SERVER
from .handshake import accept
from .layer import _ORIGINAL, RoutedWebsocketLayer, _flow_message, _routed
from .own_io import names_used, own_io_problems

__all__ = ["chain_changed", "check_internals", "install", "share_ctx_per_thread"]

logger = logging.getLogger(__name__)


_ORIGINAL_MAKE_SERVER_CONNECTION = getattr(
    HttpStream, "_wsroute_original_make_server_connection", HttpStream.make_server_connection
)


def _make_server_connection(self: HttpStream) -> layer.CommandGenerator[bool]:
    """`HttpStream.make_server_connection`, except for an intercepted WebSocket whose route has a
    server-side `on_close`: when the upstream cannot be reached (refused, DNS, TLS), the handler
    gets ``(1006, "")`` and the client is accepted and served by the route, instead of a 502.

    mitmproxy has no hook between a failed upstream connect and the 502 it sends, so this
    replaces the method for those flows (same request as mitmproxy's own code, then our answer).
    """
    socket = _routed.get(self.flow)
    if socket is None or socket.connection.handlers[SERVER].close is None:
        return (yield from _ORIGINAL_MAKE_SERVER_CONNECTION(self))
    request = self.flow.request
    connection, err = yield GetHttpConnection(
        (request.host, request.port),
        request.scheme == "https",
        self.flow.server_conn.via,
        self.flow.server_conn.transport_protocol,
    )
    if not err:
        self.context.server = self.flow.server_conn = connection
        return True
    logger.info(f"{socket.connection.url}: upstream failed ({err}); the route takes over")
    socket.connection.receive_upstream_failed()
    self.flow.metadata["wsroute"]["mode"] = "mock (upstream failed)"
    # What HttpStream does for a response an addon set in the request hook.
    self.flow.response = accept(request, socket.connection.protocols)
    self.flow.response.timestamp_start = time.time()
    yield HttpResponseHeadersHook(self.flow)
    yield from self.send_response()
    return False


_ORIGINAL_REGISTER = getattr(AddonManager, "_wsroute_original_register", AddonManager.register)
_ORIGINAL_REMOVE = getattr(AddonManager, "_wsroute_original_remove", AddonManager.remove)


def _register(self: AddonManager, addon: Any) -> Any:
    """`AddonManager.register` (``add`` and a script's load call it), then `chain_changed`."""
    try:
        return _ORIGINAL_REGISTER(self, addon)
    finally:
        chain_changed(self)


def _remove(self: AddonManager, addon: Any) -> None:
    """`AddonManager.remove` (a script's reload and unload call it), then `chain_changed`."""
    try:
        _ORIGINAL_REMOVE(self, addon)
    finally:
        chain_changed(self)


#: The addon managers whose sockets look their hooks up again soon (`chain_changed`).
_hooks_due: set[AddonManager] = set()


def chain_changed(addons: AddonManager) -> None:
    """The addon chain of `addons` changed: every routed socket whose layer calls the other
    addons' message hooks itself looks them up again (`MessageHooks.again`), so that a socket
    open across the change calls the hooks mitmproxy would call. After the current callback
    (once, however many changes it made): a script's reload removes its old module and
    registers the new one before its addon hands the new one out."""
    if addons in _hooks_due:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop runs (mitmproxy's test helpers): nothing else to wait for
        _hooks_again(addons)
        return
    _hooks_due.add(addons)
    loop.call_soon(_hooks_again, addons)


def _hooks_again(addons: AddonManager) -> None:
    _hooks_due.discard(addons)
    # The plain dict under the weak one, copied in one step: the test API's other masters,
    # on their own threads, may add sockets meanwhile.
    sockets: list[Any] = list(_routed.data.values())  # type: ignore[attr-defined]
    found: dict[int, Any] = {}  # by `id` of the addon left out: one look-up for all sockets
    for socket in sockets:
        hooks = socket.hooks
        if hooks is not None and hooks.addons is addons:
            if id(hooks.skip) not in found:
                found[id(hooks.skip)] = hooks.again()
            # None now (an async hook came): mitmproxy's machinery carries every message on
            socket.hooks = found[id(hooks.skip)]


def check_internals() -> None:
    """Raise `RuntimeError` unless mitmproxy's internals are the ones this layer was built on."""
    problems = []
    for owner, names in (
        (_ORIGINAL, ("start", "relay_messages", "done", "_handle_event")),
        (wsl.WebsocketConnection, ("send2",)),
        (wsl, ("WebsocketStartHook", "WebsocketMessageHook", "WebsocketEndHook")),
        (HttpStream, ("make_server_connection", "send_response", "flow_done")),
        (AddonManager, ("register", "remove")),
    ):
        problems += [
            f"{getattr(owner, '__name__', owner)}.{n}" for n in names if not hasattr(owner, n)
        ]
    # The names a function's code uses (globals and attributes): read from its code object, so
    # that the check also works where mitmproxy is installed without its .py files.
    if "WebsocketLayer" not in names_used(getattr(HttpStream, "flow_done", None)):
        problems.append("HttpStream.flow_done no longer creates websocket.WebsocketLayer")
    if "GetHttpConnection" not in names_used(_ORIGINAL_MAKE_SERVER_CONNECTION):
        problems.append("HttpStream.make_server_connection no longer uses GetHttpConnection")
    made = websocket.WebSocketMessage(Opcode.TEXT, True, b"")
    if vars(_flow_message(b"", True)).keys() != vars(made).keys():
        problems.append("WebSocketMessage's attributes")
    if problems:
        raise RuntimeError(
            "mitm_wsroute needs mitmproxy 12.3's WebSocket internals, which changed in this "
            f"mitmproxy ({', '.join(problems)} missing); install mitmproxy>=12.3,<13"
        )


def install() -> None:
    """Make mitmproxy create our layer for every WebSocket (routed or not), and tell routed
    sockets when the addon chain changes. Idempotent."""
    check_internals()
    problems = own_io_problems()
    if problems:
        logger.warning(
            "wsroute: mitmproxy still reads and writes every routed socket (slower): this "
            f"mitmproxy or Python differs ({'; '.join(problems)})"
        )
    own_io.ok = not problems
    wsl._wsroute_original = _ORIGINAL  # type: ignore[attr-defined]
    wsl.WebsocketLayer = RoutedWebsocketLayer  # type: ignore[misc]
    HttpStream._wsroute_original_make_server_connection = _ORIGINAL_MAKE_SERVER_CONNECTION  # type: ignore[attr-defined]
    HttpStream.make_server_connection = _make_server_connection  # type: ignore[method-assign]
    AddonManager._wsroute_original_register = _ORIGINAL_REGISTER  # type: ignore[attr-defined]
    AddonManager._wsroute_original_remove = _ORIGINAL_REMOVE  # type: ignore[attr-defined]
    AddonManager.register = _register  # type: ignore[method-assign]
    AddonManager.remove = _remove  # type: ignore[method-assign]


class _ThreadCtx(types.ModuleType):
    """`mitmproxy.ctx` with `master`, `options` and `log` per thread (see `share_ctx_per_thread`).

    A thread that never set them sees the values set last by any thread, as before."""

    _local = threading.local()
    _last: ClassVar[dict[str, Any]] = {}

    @staticmethod
    def _slot(name: str) -> property:
        def get(self: types.ModuleType) -> Any:
            try:
                return getattr(_ThreadCtx._local, name)
            except AttributeError:
                pass
            try:
                return _ThreadCtx._last[name]
            except KeyError:
                raise AttributeError(f"module 'mitmproxy.ctx' has no attribute '{name}'") from None

        def set_(self: types.ModuleType, value: Any) -> None:
            setattr(_ThreadCtx._local, name, value)
            _ThreadCtx._last[name] = value

        return property(get, set_)


for _name in ("master", "options", "log"):
    setattr(_ThreadCtx, _name, _ThreadCtx._slot(_name))


def share_ctx_per_thread() -> None:
    """Let several mitmproxy masters run in one process, each on its own thread.

    mitmproxy keeps the running master and its options in the globals of `mitmproxy.ctx`, which
    every addon reads (``ctx.options``) and `Master.__init__` overwrites: a second master in
    the same process would take over the first one's addons. The test facade runs each proxy's
    master on its own thread, so these globals become per-thread. Idempotent."""
    from mitmproxy import ctx

    if isinstance(ctx, _ThreadCtx):
        return
    for name in ("master", "options", "log"):
        if name in ctx.__dict__:
            _ThreadCtx._last[name] = ctx.__dict__.pop(name)
    ctx.__class__ = _ThreadCtx
