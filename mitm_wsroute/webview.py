"""How mitmweb (and mitmproxy's console) shows the messages of a routed socket.

mitmproxy records a message a route consumed as dropped and one a route sent as injected, but
its WebSocket view does not say so. This contentview, picked automatically for routed flows,
puts that on a first line, then shows the message as the best other view would.
"""

from __future__ import annotations

from mitmproxy import contentviews
from mitmproxy.contentviews import Contentview, Metadata
from mitmproxy.contentviews._view_raw import raw

__all__ = ["RouteMessageView", "register"]

CONSUMED = "[consumed by the route: not forwarded]"
SENT = "[sent by the route]"


class RouteMessageView(Contentview):
    """A routed socket's message, with what the route did with it."""

    @property
    def name(self) -> str:
        return "WebSocket route"

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        message, flow = metadata.websocket_message, metadata.flow
        if message is None or flow is None or "wsroute" not in flow.metadata:
            return -1
        return 10 if message.dropped or message.injected else -1

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        message = metadata.websocket_message
        line = SENT if message is not None and message.injected else CONSUMED
        return f"{line}\n{_best_other_view(data, metadata).prettify(data, metadata)}"


def _best_other_view(data: bytes, metadata: Metadata) -> Contentview:
    best: tuple[float, Contentview] = (0.0, raw)
    for name in contentviews.registry:
        view = contentviews.registry[name]
        if isinstance(view, RouteMessageView):
            continue
        try:
            priority = view.render_priority(data, metadata)
        except Exception:  # a broken view is mitmproxy's registry's to report
            continue
        if priority > best[0]:
            best = (priority, view)
    return best[1]


def register() -> None:
    """Add the view to mitmproxy's registry (once)."""
    if not any(
        isinstance(contentviews.registry[n], RouteMessageView) for n in contentviews.registry
    ):
        contentviews.add(RouteMessageView())
