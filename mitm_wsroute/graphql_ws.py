"""GraphQL over WebSocket, both protocols: the messages and the state machine of one socket.

Pure: this module imports neither mitmproxy nor asyncio. It parses and builds the messages of

- ``graphql-transport-ws``, the protocol of the `graphql-ws` library
  (https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md), and
- ``graphql-ws``, the subprotocol name of Apollo's legacy `subscriptions-transport-ws`
  (https://github.com/apollographql/subscriptions-transport-ws/blob/master/PROTOCOL.md),

and keeps, per socket, what a GraphQL server must remember: whether the connection was
initialised and which operations run. Inputs are ``receive_*()`` calls; outputs are commands
(frozen dataclasses) that `graphql_route.py` carries out on a `WebSocketRoute`.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "GRAPHQL_TRANSPORT_WS",
    "GRAPHQL_WS",
    "PROTOCOLS",
    "CheckInit",
    "Close",
    "Drop",
    "GraphQLSession",
    "InterceptSession",
    "Operation",
    "OperationMatch",
    "Rewrite",
    "Send",
    "StartOperation",
    "State",
    "StopOperation",
    "Violation",
    "operation_from_message",
    "operation_matcher",
    "pick_protocol",
    "result_payload",
]

#: The `graphql-ws` library's protocol.
GRAPHQL_TRANSPORT_WS = "graphql-transport-ws"
#: Apollo's legacy `subscriptions-transport-ws` (its subprotocol is named ``graphql-ws``).
GRAPHQL_WS = "graphql-ws"
PROTOCOLS = (GRAPHQL_TRANSPORT_WS, GRAPHQL_WS)

# graphql-transport-ws close codes (PROTOCOL.md)
BAD_REQUEST = 4400
UNAUTHORIZED = 4401
FORBIDDEN = 4403
TOO_MANY_INITS = 4429
INIT_TIMEOUT = 4408
DUPLICATE_ID = 4409

_NAME = re.compile(r"\b(?:query|mutation|subscription)\s+([_A-Za-z][_0-9A-Za-z]*)")


def pick_protocol(offered: list[str]) -> str | None:
    """The first of the two protocols in the client's offer, or None if it offers neither."""
    for protocol in offered:
        if protocol in PROTOCOLS:
            return protocol
    return None


@dataclass(frozen=True, slots=True)
class Operation:
    """One GraphQL operation a client started (subscription, query or mutation).

    `operation_name` is the message's ``operationName``, else the name of the first operation
    in `query`, else None.
    """

    id: str
    operation_name: str | None
    query: str
    variables: dict[str, Any] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)


#: What `on_subscribe` and `on_next` take: an operation name, or a predicate on the operation.
OperationMatch = str | Callable[[Operation], bool]


def operation_matcher(match: OperationMatch) -> Callable[[Operation], bool]:
    """`match` as a predicate on operations.

    Raises:
        TypeError: `match` is neither a string nor callable.
    """
    if isinstance(match, str):
        return lambda op: op.operation_name == match
    if callable(match):
        return match
    raise TypeError(f"an operation name or a predicate, not {match!r}")


def result_payload(result: Any) -> dict[str, Any]:
    """A handler's result as a ``next`` payload: a dict with ``data`` or ``errors`` as it is,
    anything else as ``{"data": result}``."""
    if isinstance(result, dict) and ("data" in result or "errors" in result):
        return result
    return {"data": result}


def _parse(text: str | bytes) -> dict[str, Any]:
    if isinstance(text, bytes):
        raise ValueError("a binary message (GraphQL over WebSocket is text)")
    try:
        message = json.loads(text)
    except ValueError as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ValueError("not a JSON object with a string 'type'")
    return message


def _id(message: dict[str, Any]) -> str:
    id = message.get("id")
    if not isinstance(id, str) or not id:
        raise ValueError(f"{message['type']!r} without a string 'id'")
    return id


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not an object")
    return value


def _operation(message: dict[str, Any]) -> Operation:
    id = _id(message)
    payload = message.get("payload")
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        raise ValueError(f"{message['type']!r} {id} without a payload with a string 'query'")
    query: str = payload["query"]
    name = payload.get("operationName")
    if name is not None and not isinstance(name, str):
        raise ValueError(f"{message['type']!r} {id}: 'operationName' is not a string")
    if name is None and (found := _NAME.search(query)):
        name = found.group(1)
    variables = _object(payload.get("variables"), "'variables'")
    extensions = _object(payload.get("extensions"), "'extensions'")
    return Operation(id, name, query, variables, extensions)


def operation_from_message(text: str | bytes) -> Operation | None:
    """The operation a client message starts (``subscribe``, or the legacy ``start``), else
    None; never raises."""
    try:
        message = _parse(text)
        if message["type"] not in ("subscribe", "start"):
            return None
        return _operation(message)
    except ValueError:
        return None


# --- commands ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send this message (a JSON object) to the side it concerns."""

    message: dict[str, Any]

    def text(self) -> str:
        return json.dumps(self.message, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Close:
    """Close the socket with this code and reason."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Violation:
    """A peer broke the protocol: log this (a `Close` follows)."""

    side: str
    text: str


@dataclass(frozen=True, slots=True)
class CheckInit:
    """Ask the route's `on_connection_init` hook about this payload, then call `init_done`."""

    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StartOperation:
    """Run the route's handler for this operation; report with `next`/`error`/`complete`."""

    operation: Operation


@dataclass(frozen=True, slots=True)
class StopOperation:
    """The client is no longer interested in this operation: stop its handler."""

    id: str


@dataclass(frozen=True, slots=True)
class Forward:
    """Intercept: pass the message on unchanged."""

    text: str | bytes


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Intercept: a result of `operation` from the server; ask the route's `on_next` handlers,
    then send `message` with the payload they return (or nothing)."""

    operation: Operation
    payload: dict[str, Any]
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Drop:
    """Intercept: drop the message (an `on_connection_init` hook refused, or it ran)."""


type Command = Send | Close | Violation | CheckInit | StartOperation | StopOperation


class State(enum.Enum):
    """A mock's connection, as a GraphQL server sees it."""

    WAITING_INIT = "waiting for connection_init"
    INITIALISING = "checking connection_init"
    READY = "acknowledged"
    CLOSED = "closed"


class GraphQLSession:
    """The server side of one mocked GraphQL socket, in `protocol` (`GRAPHQL_TRANSPORT_WS` or
    `GRAPHQL_WS`). Client messages go in with `receive`; the route's decisions with
    `init_done`, `next`, `error` and `complete`; each returns the commands to carry out."""

    def __init__(self, protocol: str) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
        self.protocol = protocol
        self.legacy = protocol == GRAPHQL_WS
        self.state = State.WAITING_INIT
        #: The operations running, by id.
        self.operations: dict[str, Operation] = {}

    def receive(self, text: str | bytes) -> list[Command]:
        """A message from the client."""
        if self.state is State.CLOSED:
            return []
        try:
            message = _parse(text)
            return self._receive(message)
        except ValueError as e:
            return self._violation(f"malformed message from the client: {e}")

    def _receive(self, message: dict[str, Any]) -> list[Command]:
        kind = message["type"]
        if kind == "connection_init":
            if self.state is not State.WAITING_INIT:
                if self.legacy:
                    return []  # subscriptions-transport-ws: a second init is ignored
                return self._close(TOO_MANY_INITS, "Too many initialisation requests")
            self.state = State.INITIALISING
            return [CheckInit(_object(message.get("payload"), "'payload'"))]
        if kind == "ping" and not self.legacy:
            pong: dict[str, Any] = {"type": "pong"}
            if "payload" in message:
                pong["payload"] = message["payload"]
            return [Send(pong)]
        if kind == "pong" and not self.legacy:
            return []
        if kind == "connection_terminate" and self.legacy:
            return self._close(1000, "")
        if kind == ("start" if self.legacy else "subscribe"):
            operation = _operation(message)
            if self.state is not State.READY:
                if self.legacy:
                    return [self._error(operation.id, "connection not initialised")]
                return self._close(UNAUTHORIZED, "Unauthorized")
            commands: list[Command] = []
            if operation.id in self.operations:
                if not self.legacy:
                    return self._close(
                        DUPLICATE_ID, f"Subscriber for {operation.id} already exists"
                    )
                # subscriptions-transport-ws: a start with a running id replaces it
                commands.append(StopOperation(operation.id))
            self.operations[operation.id] = operation
            commands.append(StartOperation(operation))
            return commands
        if kind == ("stop" if self.legacy else "complete"):
            id = _id(message)
            if self.operations.pop(id, None) is None:
                return []
            return [StopOperation(id)]
        raise ValueError(f"unknown message type {kind!r} for {self.protocol}")

    def init_done(self, accepted: bool, reason: str = "Forbidden") -> list[Command]:
        """The `on_connection_init` hook's answer: acknowledge, or refuse with 4403 (legacy: a
        ``connection_error`` first)."""
        if self.state is not State.INITIALISING:
            return []
        if not accepted:
            commands: list[Command] = []
            if self.legacy:
                commands.append(Send({"type": "connection_error", "payload": {"message": reason}}))
            return commands + self._close(FORBIDDEN, reason)
        self.state = State.READY
        if self.legacy:
            # as Apollo's server does with keep-alive on: a first `ka` right after the ack
            return [Send({"type": "connection_ack"}), Send({"type": "ka"})]
        return [Send({"type": "connection_ack"})]

    def init_timeout(self) -> list[Command]:
        """The connection-initialisation timer ran out: on ``graphql-transport-ws``, a client
        that sent no ``connection_init`` yet is closed with 4408 (one being checked counts as
        sent, as in the graphql-ws server); the legacy protocol has no such rule."""
        if self.legacy or self.state is not State.WAITING_INIT:
            return []
        return self._close(INIT_TIMEOUT, "Connection initialisation timeout")

    def keep_alive_due(self) -> bool:
        """Whether the legacy keep-alive timer should go on."""
        return self.legacy and self.state is State.READY

    def keep_alive(self) -> list[Command]:
        """The keep-alive timer fired: legacy ``ka`` (graphql-transport-ws has none)."""
        if self.legacy and self.state is State.READY:
            return [Send({"type": "ka"})]
        return []

    def next(self, id: str, result: Any) -> list[Command]:
        """A result of operation `id` (see `result_payload`); nothing once it ended."""
        if self.state is State.CLOSED or id not in self.operations:
            return []
        kind = "data" if self.legacy else "next"
        return [Send({"type": kind, "id": id, "payload": result_payload(result)})]

    def error(self, id: str, message: str) -> list[Command]:
        """Operation `id` failed before any result: an ``error`` message, which ends it
        (legacy: followed by ``complete``)."""
        if self.state is State.CLOSED or self.operations.pop(id, None) is None:
            return []
        if self.legacy:
            return [self._error(id, message), Send({"type": "complete", "id": id})]
        return [Send({"type": "error", "id": id, "payload": [{"message": message}]})]

    def complete(self, id: str) -> list[Command]:
        """Operation `id` ended: ``complete``, once."""
        if self.state is State.CLOSED or self.operations.pop(id, None) is None:
            return []
        return [Send({"type": "complete", "id": id}), StopOperation(id)]

    def closed(self) -> list[Command]:
        """The socket ended: every running operation stops."""
        self.state = State.CLOSED
        ids, self.operations = list(self.operations), {}
        return [StopOperation(id) for id in ids]

    def _error(self, id: str, message: str) -> Send:
        return Send({"type": "error", "id": id, "payload": {"message": message}})

    def _violation(self, text: str) -> list[Command]:
        return [Violation("client", text), *self._close(BAD_REQUEST, _reason(text))]

    def _close(self, code: int, reason: str) -> list[Command]:
        return [Close(code, reason), *self.closed()]


def _reason(text: str) -> str:
    """A close reason fits in 123 UTF-8 bytes."""
    data = text.encode()
    return text if len(data) <= 123 else data[:120].decode(errors="ignore") + "..."


class InterceptSession:
    """One intercepted GraphQL socket: what the client started, so that the server's results
    can be told apart by operation. Every message is checked; a malformed one closes its side
    with 4400."""

    def __init__(self, protocol: str) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
        self.protocol = protocol
        self.legacy = protocol == GRAPHQL_WS
        self.operations: dict[str, Operation] = {}
        self.closed = False

    def from_client(self, text: str | bytes) -> list[Forward | CheckInit | Violation | Close]:
        if self.closed:
            return []
        try:
            message = _parse(text)
            kind = message["type"]
            if kind == "connection_init":
                return [CheckInit(_object(message.get("payload"), "'payload'"))]
            if kind == ("start" if self.legacy else "subscribe"):
                operation = _operation(message)
                self.operations[operation.id] = operation
            elif kind == ("stop" if self.legacy else "complete"):
                self.operations.pop(_id(message), None)
            elif kind not in (("connection_terminate",) if self.legacy else ("ping", "pong")):
                raise ValueError(f"unknown message type {kind!r} for {self.protocol}")
        except ValueError as e:
            self.closed = True
            text = f"malformed message from the client: {e}"
            return [Violation("client", text), Close(BAD_REQUEST, _reason(text))]
        return [Forward(text)]

    def from_server(self, text: str | bytes) -> list[Forward | Rewrite | Violation | Close]:
        if self.closed:
            return []
        try:
            message = _parse(text)
            kind = message["type"]
            if kind == ("data" if self.legacy else "next"):
                id = _id(message)
                payload = message.get("payload")
                if not isinstance(payload, dict):
                    raise ValueError(f"{kind!r} {id} without an object payload")
                operation = self.operations.get(id)
                if operation is not None:
                    return [Rewrite(operation, payload, message)]
            elif kind in ("error", "complete"):
                self.operations.pop(_id(message), None)
            elif kind not in (
                ("connection_ack", "connection_error", "ka")
                if self.legacy
                else ("connection_ack", "ping", "pong")
            ):
                raise ValueError(f"unknown message type {kind!r} for {self.protocol}")
        except ValueError as e:
            self.closed = True
            text = f"malformed message from the server: {e}"
            return [Violation("server", text), Close(BAD_REQUEST, _reason(text))]
        return [Forward(text)]
