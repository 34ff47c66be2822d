"""The route table: which handler serves which WebSocket URL.

Pure: this module imports neither mitmproxy nor asyncio. Route scripts call
`route_web_socket()` while `scripts.py` imports them inside `Router.collect()`; the table keeps
one group of routes per script, so that a script's routes can be replaced on reload.

Precedence is Playwright's: the last registered route wins, and across scripts a later script
in ``wsroute_scripts`` wins. Exactly one handler runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

from .urlmatch import URLMatch, compile_url_match

if TYPE_CHECKING:
    from .route import WebSocketRoute

__all__ = [
    "Route",
    "RouteHandler",
    "Router",
    "registrar",
    "route_web_socket",
    "script_collector",
]

logger = logging.getLogger(__name__)

RouteHandler = Callable[["WebSocketRoute"], Any]


@dataclass(frozen=True, slots=True)
class Route:
    """One registered route."""

    url: URLMatch
    matches: Callable[[str], bool]
    handler: RouteHandler
    #: Where the handler is defined, ``file:line``, for the log.
    origin: str
    #: Which handler it is, ``script.py:name``, for mitmweb's flow comment.
    label: str


@dataclass(slots=True)
class _Collector:
    base_url: str | None
    routes: list[Route]
    #: The ``wsroute_record_mode`` option: it wins over every `route_from_har` call's.
    record_mode: Any = None


_collector: _Collector | None = None


class Router:
    """Ordered groups of routes, one group per route script, below the routes a test registered
    directly (`add`) and those of the addon's options (`option_routes`), which win over every
    script.

    Safe from any thread: writers build a new lookup table under a lock and replace it in one
    assignment, so `find` (per socket, on the proxy's thread) reads whole tables without
    locking."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Each group is kept winner first (newest first), as `find` walks it.
        self._groups: dict[str, tuple[Route, ...]] = {}
        self._order: tuple[str, ...] = ()
        self._direct: tuple[Route, ...] = ()
        self._option_routes: tuple[Route, ...] = ()
        #: What `find` walks, winner first: the direct routes, the options', the scripts'.
        self._table: tuple[tuple[Route, ...], ...] = ()

    def add(self, route: Route) -> None:
        """Register a route above every script's routes (the newest wins)."""
        with self._lock:
            self._direct = (route, *self._direct)
            self._rebuild()

    def remove(self, url: URLMatch | None, handler: RouteHandler | None = None) -> int:
        """Remove the routes that `add` registered with `url` (and `handler`, when given);
        all of them for ``url=None``. Returns how many."""
        with self._lock:
            kept = tuple(
                r
                for r in self._direct
                if url is not None
                and (r.url != url or (handler is not None and r.handler != handler))
            )
            removed, self._direct = len(self._direct) - len(kept), kept
            self._rebuild()
        return removed

    @property
    def option_routes(self) -> tuple[Route, ...]:
        """Routes made from the addon's options (``wsroute_har``): above the scripts' routes,
        below the direct ones."""
        return self._option_routes[::-1]

    @option_routes.setter
    def option_routes(self, routes: tuple[Route, ...]) -> None:
        with self._lock:
            self._option_routes = tuple(routes)[::-1]
            self._rebuild()

    def set_order(self, groups: list[str]) -> None:
        """Set which groups count, earliest first (a later group wins). Others are dropped."""
        with self._lock:
            self._order = tuple(groups)
            self._groups = {g: self._groups[g] for g in groups if g in self._groups}
            self._rebuild()

    def replace(self, group: str, routes: list[Route]) -> None:
        """Make `routes` (in registration order) the routes of `group`."""
        with self._lock:
            self._groups = {**self._groups, group: tuple(routes)[::-1]}
            self._rebuild()

    def _rebuild(self) -> None:
        """Make `find`'s table anew (with the lock held)."""
        scripts = (self._groups.get(g, ()) for g in reversed(self._order))
        self._table = tuple(
            routes for routes in (self._direct, self._option_routes, *scripts) if routes
        )

    def __contains__(self, group: str) -> bool:
        return group in self._groups

    def __len__(self) -> int:
        return sum(len(r) for r in self._groups.values())

    def find(self, url: str) -> Route | None:
        """The route that serves `url`, or None. A predicate that raises is logged, not matched."""
        for routes in self._table:  # one read: a table is never changed, only replaced
            for route in routes:
                try:
                    if route.matches(url):
                        return route
                except Exception:
                    logger.exception(
                        f"URL predicate of the route at {route.origin} failed on {url}"
                    )
        return None

    @staticmethod
    @contextlib.contextmanager
    def collect(base_url: str | None, record_mode: Any = None) -> Iterator[list[Route]]:
        """Collect the routes that `route_web_socket` registers inside this block, in order;
        `record_mode` (the ``wsroute_record_mode`` option) is for `route_from_har`."""
        global _collector
        outer, _collector = _collector, _Collector(base_url, [], record_mode)
        try:
            yield _collector.routes
        finally:
            _collector = outer


@overload
def route_web_socket(url: URLMatch) -> Callable[[RouteHandler], RouteHandler]: ...
@overload
def route_web_socket(url: URLMatch, handler: RouteHandler) -> None: ...
def route_web_socket(
    url: URLMatch, handler: RouteHandler | None = None
) -> Callable[[RouteHandler], RouteHandler] | None:
    """Route the WebSockets whose URL matches `url` to `handler`. Call it from a route script.

    Args:
        url: a glob (Playwright's syntax; relative globs resolve against ``wsroute_base_url``),
            an `re.Pattern` (searched, not anchored), or a predicate called with the URL string.
        handler: called with the page-side `WebSocketRoute` of each matching socket; sync or
            async, awaited before the socket opens. Without it, `route_web_socket` is a decorator.

    Raises:
        ValueError: `url` is an invalid glob.
        RuntimeError: called outside a route script that ``wsroute_scripts`` loads.
    """
    collector = script_collector("route_web_socket")
    return registrar(url, handler, collector.base_url, collector.routes.append)


def script_collector(caller: str) -> _Collector:
    """Where the route script being loaded registers its routes.

    Raises:
        RuntimeError: no route script is being loaded.
    """
    if _collector is None:
        raise RuntimeError(
            f"{caller}() registers routes from a route script; load the script with "
            "mitmdump -s addons/wsroute.py --set wsroute_scripts=PATH"
        )
    return _collector


def registrar(
    url: URLMatch,
    handler: RouteHandler | None,
    base_url: str | None,
    add: Callable[[Route], None],
) -> Callable[[RouteHandler], RouteHandler] | None:
    """`route_web_socket`'s body for any route table: compile `url` now (an invalid glob raises
    here), then `add` the route, or return a decorator that does when `handler` is None."""
    matches = compile_url_match(url, base_url)

    def register(h: RouteHandler) -> RouteHandler:
        if not callable(h):
            raise TypeError(f"route handler must be callable, not {type(h).__name__}")
        code = getattr(h, "__code__", None)
        file, line = (code.co_filename, code.co_firstlineno) if code else ("?", 0)
        name = str(getattr(h, "__qualname__", type(h).__name__))
        add(Route(url, matches, h, f"{file}:{line}", f"{os.path.basename(file)}:{name}"))
        return h

    if handler is None:
        return register
    register(handler)
    return None
