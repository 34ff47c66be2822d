"""The live console's decisions: what a breakpoint pauses, what waits behind a paused message,
and the bounded record of each watched socket's messages.

Pure: this module imports neither mitmproxy nor asyncio. `console_web.py` serves it over HTTP
on the proxy's event loop; every call here runs on that loop (the thread that owns the
sockets), so nothing here locks.

Each watched socket has a `SocketWatch`, set as its connection's `Watcher`: every message from
either side comes here before the route's rules (an `on_message` handler, or forwarding) see
it. A message that matches a breakpoint is paused; the later messages of the same socket and
direction, and that side's close, wait behind it, unlisted; the other direction is not held.
Releasing the paused message (forwarded as it is, edited, or dropped) hands it to the route's
rules, then the ones behind it, in order, until one matches a breakpoint again. `resume_all`,
the pause timeout and `stop` release everything without looking at breakpoints.

Memory is bounded: each socket keeps its newest `keep` messages (each cut to `PREVIEW` for the
record; what is held back is kept whole), closed sockets beyond `keep_sockets` are forgotten,
and at most `MAX_HELD_BYTES` wait behind a paused message before that direction is released.
Changes for the live feed are collected only while a page listens, and at most
the newest `MAX_LIVE` messages between two reads (the feed says how many it skipped: the
page pages back to them).
"""

from __future__ import annotations

import base64
import binascii
import collections
import itertools
import json
import logging
import re
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .connection import (
    PAGE,
    SERVER,
    Close,
    Message,
    RoutedConnection,
    Side,
    State,
    check_close,
    check_latency,
)
from .route import WebSocketRoute
from .urlmatch import compile_url_match

__all__ = [
    "CLIENT_TO_SERVER",
    "SERVER_TO_CLIENT",
    "Breakpoint",
    "Conflict",
    "Console",
    "Entry",
    "SocketWatch",
    "parse_breakpoint",
    "parse_json_path",
    "parse_message",
]

logger = logging.getLogger(__name__)

CLIENT_TO_SERVER = "client_to_server"
SERVER_TO_CLIENT = "server_to_client"
DIRECTIONS = (CLIENT_TO_SERVER, SERVER_TO_CLIENT)
#: The direction of a message from a side's peer, by `Side`.
FROM = (CLIENT_TO_SERVER, SERVER_TO_CLIENT)
#: The direction of a message sent to a side, by `Side`.
TO = (SERVER_TO_CLIENT, CLIENT_TO_SERVER)
SIDES = {"client": PAGE, "server": SERVER}

#: What a socket's record keeps of a message: its first 64 KiB (characters for text).
PREVIEW = 64 * 1024
#: Default number of messages kept per socket (``wsroute_console_keep``).
DEFAULT_KEEP = 1000
#: Closed sockets kept for the page, the newest.
DEFAULT_KEEP_SOCKETS = 100
#: Bytes that may wait behind one paused message before its direction is released.
MAX_HELD_BYTES = 64 * 1024 * 1024
#: Largest message the console takes to inject or as an edit (decoded).
MAX_INPUT = 16 * 1024 * 1024
#: Messages the feed sends between two reads (every 50 ms), the newest: what a page shows
#: live is bounded, and so is the proxy's work for it, whatever the rate.
MAX_LIVE = 200
#: Regexes and substrings of breakpoints, at most (characters).
MAX_PATTERN = 10_000


class Conflict(Exception):
    """The request is valid but the socket's state refuses it (HTTP 409)."""


@dataclass(slots=True)
class Entry:
    """One message of a socket's record: what went where, and what the route (or the console)
    did with it."""

    id: int
    direction: str
    #: The message, cut to `PREVIEW` characters (text) or bytes (binary).
    data: Message
    size: int
    action: str
    time: float

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": str(self.id), "direction": self.direction}
        out.update(message_json(self.data))
        out["action"] = self.action
        out["size"] = self.size
        out["truncated"] = len(self.data) < self.size
        out["time"] = self.time
        return out


def message_json(message: Message) -> dict[str, Any]:
    """``{"opcode": 1, "text"}`` or ``{"opcode": 2, "base64"}``."""
    if isinstance(message, str):
        return {"opcode": 1, "text": message}
    return {"opcode": 2, "base64": base64.b64encode(message).decode()}


def parse_message(body: dict[str, Any], required: bool = True) -> Message | None:
    """The message in a request body: exactly one of ``text`` (a text message), ``base64`` or
    ``hex`` (binary).

    Raises:
        ValueError: none (when `required`) or several given, not a string, bad base64 or hex,
            text that is not UTF-8 (a lone surrogate), or over `MAX_INPUT`.
    """
    given = [k for k in ("text", "base64", "hex") if body.get(k) is not None]
    if not given:
        if required:
            raise ValueError('give the message as "text", "base64" or "hex"')
        return None
    if len(given) > 1:
        raise ValueError(f"give one of text, base64 or hex, not {' and '.join(given)}")
    key = given[0]
    value = body[key]
    if not isinstance(value, str):
        raise ValueError(f'"{key}" must be a string, not {type(value).__name__}')
    if len(value) > 2 * MAX_INPUT:
        raise ValueError(f"the message is over {MAX_INPUT} bytes")
    message: Message
    if key == "text":
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValueError("the text cannot be sent as UTF-8 (a lone surrogate)") from None
        message = value
    elif key == "base64":
        try:
            message = base64.b64decode(value, validate=True)
        except binascii.Error as e:
            raise ValueError(f"bad base64: {e}") from None
    else:
        try:
            message = bytes.fromhex(value)
        except ValueError as e:
            raise ValueError(f"bad hex: {e}") from None
    if len(message) > MAX_INPUT:
        raise ValueError(f"the message is {len(message)} bytes, over {MAX_INPUT}")
    return message


def _side(body: dict[str, Any], key: str) -> Side:
    value = body.get(key)
    if value not in SIDES:
        raise ValueError(f'"{key}" must be "client" or "server", not {value!r}')
    return SIDES[value]


_PATH_PART = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def parse_json_path(path: str) -> tuple[str | int, ...]:
    """A simple JSON path: ``$.a.b[0].c`` (the ``$`` is optional): keys and list indexes.

    Raises:
        ValueError: empty, or not of that form.
    """
    rest = path.strip()
    if rest.startswith("$"):
        rest = rest[1:]
    parts: list[str | int] = []
    pos = 0
    while pos < len(rest):
        m = _PATH_PART.match(rest, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"bad JSON path {path!r}: use keys and indexes, like $.a.b[0]")
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not parts:
        raise ValueError(f"bad JSON path {path!r}: empty")
    return tuple(parts)


_MISSING = object()


def _json_at(message: str, path: tuple[str | int, ...]) -> Any:
    try:
        value: Any = json.loads(message)
    except ValueError:
        return _MISSING
    for part in path:
        if isinstance(part, int) and isinstance(value, list) and part < len(value):
            value = value[part]
        elif isinstance(part, str) and isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return _MISSING
    return value


@dataclass(frozen=True, slots=True)
class Breakpoint:
    """Pauses the messages of sockets whose URL matches `url` (a Playwright glob), in
    `direction` (or both), that pass every filter given: `match` (``re.search`` on text),
    `contains` (a substring of the text) and `json_path` (the text is JSON with a value there,
    equal to `json_value` when that is given). A binary message matches only without filters."""

    id: str
    url: str
    direction: str
    match: str | None = None
    contains: str | None = None
    json_path: str | None = None
    json_value: Any = _MISSING
    _url: Callable[[str], bool] = field(default=lambda url: True, repr=False, compare=False)
    _regex: re.Pattern[str] | None = field(default=None, repr=False, compare=False)
    _path: tuple[str | int, ...] = field(default=(), repr=False, compare=False)

    def matches(self, url: str, direction: str, message: Message) -> bool:
        if self.direction != "both" and direction != self.direction:
            return False
        if not self._url(url):
            return False
        if self._regex is None and self.contains is None and not self._path:
            return True
        if not isinstance(message, str):
            return False
        if self._regex is not None and self._regex.search(message) is None:
            return False
        if self.contains is not None and self.contains not in message:
            return False
        if self._path:
            value = _json_at(message, self._path)
            if value is _MISSING:
                return False
            if self.json_value is not _MISSING and value != self.json_value:
                return False
        return True

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "url": self.url,
            "direction": self.direction,
            "match": self.match,
            "contains": self.contains,
            "json_path": self.json_path,
        }
        if self.json_value is not _MISSING:
            out["json_value"] = self.json_value
        return out


def parse_breakpoint(id: str, body: dict[str, Any]) -> Breakpoint:
    """A breakpoint from ``{"url": glob, "direction": ..., "match": regex or null}``, and the
    optional ``contains``, ``json_path`` and ``json_value``.

    Raises:
        ValueError: a field of the wrong type, an unknown direction, a bad glob, regex or path.
    """
    url = body.get("url", "**")
    if url is None:
        url = "**"
    if not isinstance(url, str) or len(url) > MAX_PATTERN:
        raise ValueError('"url" must be a glob string (e.g. "**/chat")')
    direction = body.get("direction", "both")
    if direction not in (*DIRECTIONS, "both"):
        raise ValueError(
            f'"direction" must be "client_to_server", "server_to_client" or "both", '
            f"not {direction!r}"
        )
    for key in ("match", "contains", "json_path"):
        value = body.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_PATTERN):
            raise ValueError(f'"{key}" must be a string of at most {MAX_PATTERN} characters')
    try:
        url_match = compile_url_match(url)
    except (ValueError, TypeError) as e:
        raise ValueError(f"bad url glob {url!r}: {e}") from None
    match = body.get("match") or None
    regex = None
    if match is not None:
        try:
            regex = re.compile(match)
        except re.error as e:
            raise ValueError(f"bad regex {match!r}: {e}") from None
    json_path = body.get("json_path") or None
    path = parse_json_path(json_path) if json_path is not None else ()
    json_value = body.get("json_value", _MISSING)
    if json_value is not _MISSING and json_path is None:
        raise ValueError('"json_value" needs a "json_path"')
    return Breakpoint(
        id,
        url,
        direction,
        match,
        body.get("contains") or None,
        json_path,
        json_value,
        url_match,
        regex,
        path,
    )


@dataclass(slots=True)
class Held:
    """A message paused at a breakpoint."""

    id: int
    socket: SocketWatch
    side: Side
    message: Message
    breakpoint: str
    since: float

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": str(self.id),
            "socket_id": self.socket.id,
            "direction": FROM[self.side],
        }
        out.update(message_json(self.message))
        out["url"] = self.socket.url
        out["breakpoint"] = self.breakpoint
        out["waiting"] = len(self.socket.lanes[self.side].waiting)
        out["since"] = self.since
        timeout = self.socket.console.pause_timeout
        out["released_at"] = self.since + timeout if timeout else None
        return out


@dataclass(slots=True)
class _Lane:
    """One direction of one socket: the paused message, and what waits behind it."""

    paused: Held | None = None
    #: Messages (and the side's close) behind the paused one, oldest first.
    waiting: collections.deque[Message | Close] = field(default_factory=collections.deque)
    waiting_bytes: int = 0


class SocketWatch:
    """The console's view of one routed socket: its record, and the `Watcher` its connection
    calls (`RoutedConnection.watcher`)."""

    def __init__(
        self, console: Console, id: str, connection: RoutedConnection, kind: str, route: str
    ) -> None:
        self.console = console
        self.id = id
        self.url = connection.url
        self.kind = kind
        self.route = route
        self._connection = weakref.ref(connection, self._gone)
        self.messages: collections.deque[Entry] = collections.deque()
        self.kept_bytes = 0
        self.counts = [0, 0]  # by direction: client to server, server to client
        self.lanes = (_Lane(), _Lane())  # by the side the messages come from
        self.over = False
        self.close: Close | None = None
        self.injecting = False
        self.started = console.clock()

    @property
    def connection(self) -> RoutedConnection | None:
        return self._connection()

    # --- the Watcher: called by the connection, per message --------------------------------

    # Called inside the proxy's handling of a socket: what fails here is logged, and the
    # message goes on by the route's rules, as if the console did not watch.

    def receive(self, side: Side, message: Message) -> Side | None:
        lane = self.lanes[side]
        if lane.paused is None and not lane.waiting:
            console = self.console
            if console.breakpoints:
                try:
                    found = console.breakpoint_for(self.url, FROM[side], message)
                except Exception:
                    logger.exception(f"{self.url}: wsroute console: a breakpoint failed")
                    found = None
                if found is not None:
                    self._pause(side, message, found)
                    return None
            connection = self._connection()
            assert connection is not None  # it is the caller
            to = connection.deliver(side, message)
            try:
                self._record(FROM[side], message, self._action(side, to, False))
            except Exception:
                logger.exception(f"{self.url}: wsroute console: cannot record a message")
            return to
        lane.waiting.append(message)
        lane.waiting_bytes += len(message)
        self._waiting_changed()
        if lane.waiting_bytes > MAX_HELD_BYTES:
            logger.warning(
                f"{self.url}: over {MAX_HELD_BYTES} bytes wait behind a paused message "
                f"({FROM[side]}): releasing them"
            )
            self.resume(side)
        return None

    def hold_close(self, side: Side, close: Close) -> bool:
        lane = self.lanes[side]
        if lane.paused is None and not lane.waiting:
            return False
        lane.waiting.append(close)
        self._waiting_changed()
        return True

    def _waiting_changed(self) -> None:
        """The "waiting" counts of this socket and of its paused message changed."""
        self.console.socket_changed(self)
        self.console.paused_changed()

    def sent(self, to: Side, message: Message) -> None:
        try:
            self._record(TO[to], message, "injected" if self.injecting else "sent_by_route")
        except Exception:
            logger.exception(f"{self.url}: wsroute console: cannot record a message")

    def closed(self, side: Side, close: Close) -> None:
        if self.close is None:
            self.close = close
        try:
            self.console.socket_changed(self)
        except Exception:
            logger.exception(f"{self.url}: wsroute console: cannot tell the page")

    def ended(self) -> None:
        try:
            self._end()
        except Exception:
            logger.exception(f"{self.url}: wsroute console: cannot end the socket's record")

    # --- the record ---------------------------------------------------------------------------

    def _action(self, side: Side, to: Side | None, edited: bool) -> str:
        if to is not None:
            return "edited" if edited else "forwarded"
        connection = self._connection()
        if (
            connection is not None
            and connection.states[side] is State.OPEN
            and connection.handlers[side].message is not None
        ):
            return "edited" if edited else "consumed"
        return "dropped"

    def _record(self, direction: str, message: Message, action: str) -> None:
        console = self.console
        size = len(message)
        data = message if size <= PREVIEW else message[:PREVIEW]
        entry = Entry(next(console.ids), direction, data, size, action, console.clock())
        messages = self.messages
        messages.append(entry)
        self.kept_bytes += len(data)
        self.counts[direction == SERVER_TO_CLIENT] += 1
        if len(messages) > console.keep or self.kept_bytes > console.keep_bytes:
            while len(messages) > 1 and (
                len(messages) > console.keep or self.kept_bytes > console.keep_bytes
            ):
                self.kept_bytes -= len(messages.popleft().data)
        if console.listening:
            console.message_added(self, entry)

    def messages_json(
        self, after: int | None = None, before: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The kept messages, oldest first: those after `after` (an id), else before
        `before`; the last `limit` of them (after `after`: the first)."""
        if after is not None:
            chosen = [e for e in self.messages if e.id > after]
            if limit is not None:
                chosen = chosen[:limit]
        else:
            chosen = [e for e in self.messages if before is None or e.id < before]
            if limit is not None:
                chosen = chosen[-limit:] if limit else []
        return [e.to_json() for e in chosen]

    @property
    def state(self) -> str:
        connection = self._connection()
        if self.over or connection is None or connection.both_closed:
            return "closed"
        if self.lanes[0].paused is not None or self.lanes[1].paused is not None:
            return "paused"
        return "open"

    def to_json(self) -> dict[str, Any]:
        state = self.state
        close = self.close
        if close is None and state == "closed":
            connection = self._connection()
            if connection is not None and connection.first_close is not None:
                close = connection.first_close[1]
        return {
            "id": self.id,
            "url": self.url,
            "route": self.route,
            "kind": self.kind,
            "state": state,
            "close_code": None if close is None else close.code,
            "close_reason": None if close is None else close.reason,
            "counts": {CLIENT_TO_SERVER: self.counts[0], SERVER_TO_CLIENT: self.counts[1]},
            "waiting": len(self.lanes[0].waiting) + len(self.lanes[1].waiting),
        }

    # --- pausing and releasing ----------------------------------------------------------------

    def _pause(self, side: Side, message: Message, breakpoint: Breakpoint) -> None:
        console = self.console
        held = Held(next(console.ids), self, side, message, breakpoint.id, console.clock())
        self.lanes[side].paused = held
        console.paused[held.id] = held
        console.paused_changed()

    def release(self, held: Held, forward: bool, edit: Message | None) -> None:
        """Release the paused message of a direction: forwarded (as `edit` if given) or
        dropped; then what waited behind it, until a message matches a breakpoint again."""
        side = held.side
        lane = self.lanes[side]
        assert lane.paused is held
        lane.paused = None
        self.console.paused.pop(held.id, None)
        self.console.paused_changed()
        if forward:
            self._hand_on(side, held.message if edit is None else edit, edit is not None)
        else:
            self._record(FROM[side], held.message, "dropped")
        self._flush(side, check=True)

    def resume(self, side: Side) -> None:
        """Release a direction's paused message and all behind it, unchanged."""
        lane = self.lanes[side]
        held = lane.paused
        if held is not None:
            lane.paused = None
            self.console.paused.pop(held.id, None)
            self.console.paused_changed()
            self._hand_on(side, held.message, False)
        self._flush(side, check=False)

    def _flush(self, side: Side, check: bool) -> None:
        lane = self.lanes[side]
        console = self.console
        while lane.waiting and lane.paused is None:
            item = lane.waiting.popleft()
            if isinstance(item, Close):
                connection = self._connection()
                if connection is not None:
                    connection.release_close(side, item)
                continue
            lane.waiting_bytes -= len(item)
            if check and console.breakpoints:
                found = console.breakpoint_for(self.url, FROM[side], item)
                if found is not None:
                    self._pause(side, item, found)
                    break
            self._hand_on(side, item, False)
        if not lane.waiting:
            lane.waiting_bytes = 0
        console.socket_changed(self)

    def _hand_on(self, side: Side, message: Message, edited: bool) -> None:
        connection = self._connection()
        to = None if connection is None else connection.release(side, message)
        self._record(FROM[side], message, self._action(side, to, edited))

    def _end(self) -> None:
        """The socket is over: what is held goes nowhere."""
        if self.over:
            return
        self.over = True
        for side in (PAGE, SERVER):
            lane = self.lanes[side]
            if lane.paused is not None:
                self.console.paused.pop(lane.paused.id, None)
                self._record(FROM[side], lane.paused.message, "dropped")
                lane.paused = None
                self.console.paused_changed()
            for item in lane.waiting:
                if not isinstance(item, Close):
                    self._record(FROM[side], item, "dropped")
            lane.waiting.clear()
            lane.waiting_bytes = 0
        self.console.socket_ended(self)

    def _gone(self, ref: object) -> None:
        # A weakref callback may run inside any allocation (a garbage collection), also while
        # the console iterates its sockets: only noted here, handled by `Console.tidy`.
        self.console.gone.append(self)

    # --- the route API, from the console --------------------------------------------------------

    def _route(self, side: Side) -> WebSocketRoute:
        connection = self._connection()
        if connection is None or self.over:
            raise Conflict("the socket is closed")
        if connection.states[side] not in (State.OPEN, State.CONNECTING):
            what = "never connected (a mock)" if connection.states[side] is State.NONE else "closed"
            raise Conflict(f"the {side} side is {what}")
        return WebSocketRoute(connection, side)

    def inject(self, body: dict[str, Any]) -> None:
        """``{"to": "client"|"server", "text"|"base64"|"hex"}``: send a message to a side."""
        side = _side(body, "to")
        message = parse_message(body)
        assert message is not None
        route = self._route(side)
        self.injecting = True
        try:
            route.send(message)
        finally:
            self.injecting = False

    def close_side(self, body: dict[str, Any]) -> None:
        """``{"side", "code", "reason"}``: close a side, as the route API's ``close()``."""
        side = _side(body, "side")
        code, reason = body.get("code"), body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ValueError('"reason" must be a string')
        check_close(code, reason)
        self._route(side).close(code=code, reason=reason)

    def drop(self, body: dict[str, Any]) -> None:
        """``{"side"}``: end a side without a close frame (1006), as ``drop()``."""
        self._route(_side(body, "side")).drop()

    def set_latency(self, body: dict[str, Any]) -> None:
        """``{"side", "seconds"}``: hold what is sent to a side, as ``set_latency()``."""
        side = _side(body, "side")
        seconds = check_latency(body.get("seconds"))
        self._route(side).set_latency(seconds)


class Console:
    """Every watched socket, the breakpoints, and the paused messages.

    Args:
        keep: messages kept per socket (the newest).
        keep_bytes: bytes of messages kept per socket (the newest message always).
        keep_sockets: closed sockets kept (the newest).
        pause_timeout: seconds a message stays paused before its direction is released
            (0: until released).
        clock: seconds, for the pause timeout and the messages' times.
    """

    def __init__(
        self,
        keep: int = DEFAULT_KEEP,
        keep_bytes: int = 16 * 1024 * 1024,
        keep_sockets: int = DEFAULT_KEEP_SOCKETS,
        pause_timeout: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keep = keep
        self.keep_bytes = keep_bytes
        self.keep_sockets = keep_sockets
        self.pause_timeout = pause_timeout
        self.clock = clock
        self.ids = itertools.count(1)
        self.sockets: dict[str, SocketWatch] = {}
        self.closed_sockets: collections.deque[str] = collections.deque()
        self.breakpoints: dict[str, Breakpoint] = {}
        #: Paused messages by id, oldest first.
        self.paused: dict[int, Held] = {}
        #: A page listens to the feed: changes are collected (`take_changes`).
        self.listening = False
        #: Called when the first change after a `take_changes` is collected.
        self.on_change: Callable[[], None] | None = None
        self._messages: collections.deque[tuple[SocketWatch, Entry]] = collections.deque(
            maxlen=MAX_LIVE
        )
        #: Messages added since the last read, by socket (those beyond `MAX_LIVE` are skipped).
        self._added: dict[str, int] = {}
        self._sockets: dict[str, SocketWatch] = {}
        self._paused_changed = False
        self._breakpoints_changed = False
        self._due = False
        #: Sockets whose connection was collected without an end (`SocketWatch._gone`).
        self.gone: list[SocketWatch] = []

    def tidy(self) -> None:
        """End the record of sockets whose connection is gone (before any other step)."""
        while self.gone:
            self.gone.pop()._end()

    # --- sockets ------------------------------------------------------------------------------

    def watch(self, connection: RoutedConnection, kind: str, route: str) -> SocketWatch:
        """Start watching a routed socket (`kind`: "mock" or "intercept")."""
        self.tidy()
        watch = SocketWatch(self, str(next(self.ids)), connection, kind, route)
        self.sockets[watch.id] = watch
        connection.watcher = watch
        self.socket_changed(watch)
        return watch

    def sockets_json(self) -> list[dict[str, Any]]:
        self.tidy()
        return [w.to_json() for w in list(self.sockets.values())]

    def socket(self, id: str) -> SocketWatch:
        """Raises: LookupError: no such socket (any more)."""
        self.tidy()
        watch = self.sockets.get(id)
        if watch is None:
            raise LookupError(f"no socket {id!r}")
        return watch

    def socket_ended(self, watch: SocketWatch) -> None:
        connection = watch.connection
        if connection is not None and connection.watcher is watch:
            connection.watcher = None
        self.closed_sockets.append(watch.id)
        while len(self.closed_sockets) > self.keep_sockets:
            self.sockets.pop(self.closed_sockets.popleft(), None)
        self.socket_changed(watch)

    # --- breakpoints --------------------------------------------------------------------------

    def add_breakpoint(self, body: dict[str, Any]) -> Breakpoint:
        breakpoint = parse_breakpoint(str(next(self.ids)), body)
        self.breakpoints[breakpoint.id] = breakpoint
        self._changed_breakpoints()
        return breakpoint

    def delete_breakpoint(self, id: str) -> None:
        """Paused messages stay paused. Raises: LookupError: no such breakpoint."""
        if self.breakpoints.pop(id, None) is None:
            raise LookupError(f"no breakpoint {id!r}")
        self._changed_breakpoints()

    def breakpoint_for(self, url: str, direction: str, message: Message) -> Breakpoint | None:
        for breakpoint in self.breakpoints.values():
            if breakpoint.matches(url, direction, message):
                return breakpoint
        return None

    # --- paused messages ----------------------------------------------------------------------

    def release(self, id: str, body: dict[str, Any]) -> None:
        """``{"action": "forward"|"drop", "text"|"base64"|"hex": optional edit}``.

        Raises:
            LookupError: no such paused message (released already).
            ValueError: a bad action or edit.
        """
        self.tidy()
        held = self.paused.get(_int_id(id, "paused message"))
        if held is None:
            raise LookupError(f"no paused message {id!r}")
        action = body.get("action", "forward")
        if action not in ("forward", "drop"):
            raise ValueError(f'"action" must be "forward" or "drop", not {action!r}')
        edit = parse_message(body, required=False)
        if action == "drop" and edit is not None:
            raise ValueError("a dropped message takes no edit")
        held.socket.release(held, action == "forward", edit)

    def resume_all(self) -> int:
        """Release every paused message and all behind them, unchanged. Returns how many
        were paused."""
        self.tidy()
        count = len(self.paused)
        for watch in list(self.sockets.values()):
            for side in (PAGE, SERVER):
                lane = watch.lanes[side]
                if lane.paused is not None or lane.waiting:
                    watch.resume(side)
        return count

    def expire(self) -> int:
        """Release (unchanged, with what waits behind) the messages paused for longer than
        `pause_timeout`. Returns how many."""
        self.tidy()
        if not self.pause_timeout:
            return 0
        deadline = self.clock() - self.pause_timeout
        late = [held for held in self.paused.values() if held.since <= deadline]
        for held in late:
            logger.info(
                f"{held.socket.url}: a paused message ({FROM[held.side]}) released after "
                f"{self.pause_timeout:g} s (wsroute_console_pause_timeout)"
            )
            held.socket.resume(held.side)
        return len(late)

    def next_expiry(self) -> float | None:
        """When the oldest paused message times out (a `clock` time), if any does."""
        if not self.pause_timeout or not self.paused:
            return None
        return min(held.since for held in self.paused.values()) + self.pause_timeout

    def stop(self) -> None:
        """The console stops: release everything, forget the breakpoints, watch no more."""
        self.breakpoints.clear()
        self.resume_all()
        for watch in self.sockets.values():
            connection = watch.connection
            if connection is not None and connection.watcher is watch:
                connection.watcher = None
        self.sockets.clear()
        self.closed_sockets.clear()

    def pages_gone(self) -> None:
        """The last page left: nobody is left to release a pause, so the breakpoints go and
        every paused message is released."""
        if self.breakpoints:
            self.breakpoints.clear()
            self._changed_breakpoints()
        released = self.resume_all()
        if released:
            logger.info(f"wsroute console: the page closed, {released} paused message(s) released")

    # --- what the feed tells the page -------------------------------------------------------

    def message_added(self, watch: SocketWatch, entry: Entry) -> None:
        self._messages.append((watch, entry))
        added = self._added
        added[watch.id] = added.get(watch.id, 0) + 1
        self._sockets[watch.id] = watch
        self._signal()

    def socket_changed(self, watch: SocketWatch) -> None:
        if self.listening:
            self._sockets[watch.id] = watch
            self._signal()

    def paused_changed(self) -> None:
        if self.listening:
            self._paused_changed = True
            self._signal()

    def _changed_breakpoints(self) -> None:
        if self.listening:
            self._breakpoints_changed = True
            self._signal()

    def _signal(self) -> None:
        if not self._due:
            self._due = True
            if self.on_change is not None:
                self.on_change()

    def snapshot(self) -> dict[str, Any]:
        """Everything a page starts from (and starts again from after a ``resync``)."""
        self.tidy()
        return {
            "type": "hello",
            "sockets": [w.to_json() for w in list(self.sockets.values())],
            "paused": self.paused_json(),
            "breakpoints": [b.to_json() for b in self.breakpoints.values()],
        }

    def paused_json(self) -> list[dict[str, Any]]:
        self.tidy()
        return [held.to_json() for held in self.paused.values()]

    def take_changes(self) -> list[dict[str, Any]]:
        """The changes collected since the last call, as feed events, in order: how many
        messages of each socket were skipped (``{"type": "skipped", "socket_id", "count"}``,
        before the newest `MAX_LIVE`), the messages, the sockets they changed, the paused
        list, the breakpoints."""
        self.tidy()
        self._due = False
        events: list[dict[str, Any]] = []
        messages = self._messages
        added, self._added = self._added, {}
        if sum(added.values()) > len(messages):
            for watch, _ in messages:
                added[watch.id] -= 1
            events.extend(
                {"type": "skipped", "socket_id": id, "count": count}
                for id, count in added.items()
                if count
            )
        events.extend(
            {"type": "message", "socket_id": watch.id, "message": entry.to_json()}
            for watch, entry in messages
        )
        messages.clear()
        sockets, self._sockets = self._sockets, {}
        events.extend({"type": "socket", "socket": w.to_json()} for w in sockets.values())
        if self._paused_changed:
            events.append({"type": "paused", "paused": self.paused_json()})
            self._paused_changed = False
        if self._breakpoints_changed:
            events.append(
                {
                    "type": "breakpoints",
                    "breakpoints": [b.to_json() for b in self.breakpoints.values()],
                }
            )
            self._breakpoints_changed = False
        return events


def _int_id(id: str, what: str) -> int:
    if not id.isdigit() or len(id) > 18:
        raise LookupError(f"no {what} {id!r}")
    return int(id)
