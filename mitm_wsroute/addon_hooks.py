"""Other addons' message hooks, called by the layer itself for a routed socket's messages.

mitmproxy calls a ``websocket_message`` hook through its event machinery: a task, and a trip
through the whole layer stack for each message. When every loaded addon's ``websocket_message``
and ``update`` handlers are synchronous, the layer calls them itself (`MessageHooks`), in the
order and with the error handling mitmproxy's ``handle_lifecycle`` has; an addon that
intercepts the flow holds the socket until it is resumed (`WaitForResume`). A socket's handlers
are looked up when it opens and again whenever the addon chain changes (`patches` tells it:
an addon added or removed, a script loaded again), so that it calls the handlers mitmproxy
would.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import http
from mitmproxy.addonmanager import safecall, traverse
from mitmproxy.exceptions import AddonHalt
from mitmproxy.proxy import commands

__all__ = ["MessageHooks", "WaitForResume", "message_hooks"]


@dataclass(frozen=True)
class MessageHooks:
    """What mitmproxy's ``handle_lifecycle`` calls for a ``websocket_message`` hook: every
    addon's ``websocket_message(flow)``, then every addon's ``update([flow])``, in the addon
    chain's order, each in mitmproxy's ``safecall`` (an error is logged, `AddonHalt` stops
    the rest). Only for synchronous handlers: `message_hooks` says whether they all are."""

    message: tuple[Callable[[http.HTTPFlow], object], ...]
    update: tuple[Callable[[list[http.HTTPFlow]], object], ...]
    #: mitmproxy's ``AddonManager`` they were found in, and the addon left out (ours): what
    #: `again` looks them up in.
    addons: Any = field(default=None, compare=False, repr=False)
    skip: object = field(default=None, compare=False, repr=False)

    def again(self) -> MessageHooks | None:
        """The handlers of the addon chain as it is now (`message_hooks`)."""
        return message_hooks(self.addons, self.skip)

    def call(self, flow: http.HTTPFlow) -> bool:
        """Call the hooks for the newest message of `flow`; True if one intercepted it."""
        _call_each(self.message, flow)
        self.updated(flow)
        return flow.intercepted

    def updated(self, flow: http.HTTPFlow) -> None:
        """Call the ``update`` hooks: `flow` changed (also for messages a route sent)."""
        if self.update:  # mitmdump's addons have none: per message, no list
            _call_each(self.update, [flow])


def _call_each(handlers: tuple[Callable[[Any], object], ...], arg: object) -> None:
    """Call each handler with `arg`, as mitmproxy's ``safecall`` would: an error is logged,
    `AddonHalt` stops the rest."""
    for handler in handlers:
        try:
            handler(arg)
        except AddonHalt:
            return
        except Exception:
            _log_error()


def _log_error() -> None:
    """Log the exception being handled as mitmproxy logs an addon's. Its `safecall` (a
    generator's context) costs a microsecond: only once a hook raised."""
    with safecall():
        raise


def message_hooks(addons: Any, skip: object) -> MessageHooks | None:
    """The ``websocket_message`` and ``update`` handlers of the addons in the chain of
    `addons` (mitmproxy's ``AddonManager``; and the addons they hold, as mitmproxy walks them)
    but `skip`; None if any is a coroutine function, which only mitmproxy's machinery can
    await."""
    found: dict[str, list[Callable[..., object]]] = {"websocket_message": [], "update": []}
    for addon in traverse(addons.chain):
        if addon is skip:
            continue
        for name, handlers in found.items():
            handler = getattr(addon, name, None)
            if handler is None or isinstance(handler, types.ModuleType):
                continue  # mitmproxy skips a module of that name too
            if not callable(handler) or _is_async(handler):
                return None
            handlers.append(handler)
    return MessageHooks(tuple(found["websocket_message"]), tuple(found["update"]), addons, skip)


def _is_async(handler: Callable[..., object]) -> bool:
    """A coroutine function, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - callable() was checked
    )


@dataclass(eq=False)  # hashed by identity, as mitmproxy's registered hooks are
class WaitForResume(commands.StartHook):
    """Have mitmproxy wait until an intercepted flow is resumed, as it does after any hook
    (``ProxyConnectionHandler.handle_hook``). Named "" so that no addon implements it, and
    mitmproxy registers no hook of that name (a reload defines it again)."""

    flow: http.HTTPFlow
    name = ""
