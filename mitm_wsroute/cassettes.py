"""Recordings as test cassettes, with vcrpy's names: record modes, filters, message matchers.

Pure: this module imports neither mitmproxy nor asyncio. `harroute` applies what is here to
live sockets; `har.Replay` calls the matchers.

- **Record modes** (`RecordMode`): ``"none"`` replays only, ``"once"`` records when the file
  is missing and else replays, ``"new_episodes"`` replays what matches and records what does
  not, ``"all"`` always records. `resolve_mode` says which one a call gets.
- **Filters** (`Filters`): header values and query parameters replaced by ``"FILTERED"``, and
  ``before_record_message(direction, message) -> message | None``, applied to what is written
  and, the same way, to the live URL and messages before they are matched.
- **Matchers** (`matcher`): how a live client message is compared with a recorded one; for
  Socket.IO and GraphQL over WebSocket, at the protocol's level (`SocketIOMatch`,
  `GraphQLMatch`), with the ids the client picks renumbered in the replay's answers.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args
from urllib.parse import unquote_plus

from .graphql_ws import operation_from_message
from .har import ProtocolMatch
from .socketio import EIO, SIO, Packet, decode_eio, decode_sio

__all__ = [
    "FILTERED",
    "FILTER_HEADERS",
    "RECORD_MODES",
    "Filters",
    "GraphQLMatch",
    "Match",
    "MatchFunction",
    "Order",
    "RecordMode",
    "SocketIOMatch",
    "check_record_mode",
    "closest",
    "matcher",
    "resolve_mode",
]

Message = str | bytes
RecordMode = Literal["none", "once", "new_episodes", "all"]
RECORD_MODES: tuple[str, ...] = get_args(RecordMode)
Order = Literal["sequential", "any"]
Direction = Literal["send", "receive"]
#: ``(recorded, actual) -> bool``: whether a live client message matches a recorded one.
MatchFunction = Callable[[Message, Message], bool]
Match = (
    Literal["exact", "json", "json_subset", "socket.io", "graphql"]
    | re.Pattern[str]
    | MatchFunction
)
BeforeRecordMessage = Callable[[Direction, Message], Message | None]

#: What a filtered header or query parameter's value becomes.
FILTERED = "FILTERED"
#: `Filters.headers` by default: credentials, never written to a file.
FILTER_HEADERS = ("authorization", "cookie", "set-cookie", "proxy-authorization")


# --- record modes --------------------------------------------------------------------------------


def check_record_mode(value: object, name: str = "record_mode") -> RecordMode | None:
    """`value` if it is a record mode or None.

    Raises:
        ValueError: anything else, naming `name` and the modes.
    """
    if value is None or (isinstance(value, str) and value in RECORD_MODES):
        return value  # type: ignore[return-value]
    modes = ", ".join(repr(m) for m in RECORD_MODES)
    raise ValueError(f"{name} must be one of {modes} (vcrpy's record modes), not {value!r}")


def resolve_mode(
    record_mode: RecordMode | None, update: bool, override: RecordMode | None, exists: bool
) -> Literal["none", "new_episodes", "all"]:
    """What a `route_from_har` call does: `override` (the ``wsroute_record_mode`` option or
    the pytest flag) wins over `record_mode`, which wins over `update` (True: ``"all"``, else
    ``"none"``); ``"once"`` is ``"all"`` when the file does not exist, else ``"none"``."""
    mode = override or record_mode or ("all" if update else "none")
    if mode == "once":
        return "none" if exists else "all"
    return mode


# --- filters -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filters:
    """What is removed before anything is written, and before a live socket is matched.

    Args:
        headers: request header names (any case) whose values become ``"FILTERED"``.
        query: query parameter names (exact) whose values become ``"FILTERED"``.
        before_record_message: ``(direction, message) -> message | None``, ``direction``
            ``"send"`` (the client sent it) or ``"receive"``; None skips the message.
    """

    headers: frozenset[str] = frozenset(FILTER_HEADERS)
    query: frozenset[str] = frozenset()
    before_record_message: BeforeRecordMessage | None = None

    @classmethod
    def of(
        cls,
        headers: Iterable[str],
        query: Iterable[str],
        before_record_message: BeforeRecordMessage | None,
    ) -> Filters:
        """Checked arguments of `route_from_har`.

        Raises:
            ValueError: a name list is a string or holds something else than strings, or
                `before_record_message` is not callable.
        """
        names = []
        for arg, value in (("filter_headers", headers), ("filter_query", query)):
            one = isinstance(value, str | bytes) or not isinstance(value, Iterable)
            listed = [] if one else list(value)
            if one or not all(isinstance(v, str) for v in listed):
                raise ValueError(
                    f"{arg} must be a list of names (strings), not {value!r}; "
                    f"for one name: {arg}=[{value!r}]"
                )
            names.append(listed)
        if before_record_message is not None and not callable(before_record_message):
            raise ValueError(
                "before_record_message must be a function (direction, message) -> message or "
                f"None, not {before_record_message!r}"
            )
        return cls(
            frozenset(h.lower() for h in names[0]), frozenset(names[1]), before_record_message
        )

    def url(self, url: str) -> str:
        """`url` with the values of the filtered query parameters replaced (order kept)."""
        if not self.query or "?" not in url:
            return url
        base, _, query = url.partition("?")
        parts = []
        for part in query.split("&"):
            name = part.partition("=")[0]
            if unquote_plus(name) in self.query:
                part = f"{name}={FILTERED}"
            parts.append(part)
        return f"{base}?{'&'.join(parts)}"

    def header_fields(self, fields: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(k, FILTERED if k.lower() in self.headers else v) for k, v in fields]

    def message(self, direction: Direction, message: Message) -> Message | None:
        """The message as it is written and matched; None to skip it.

        Raises:
            TypeError: `before_record_message` returned something else than str, bytes or
                None.
        """
        if self.before_record_message is None:
            return message
        result = self.before_record_message(direction, message)
        if result is None or type(result) is str or type(result) is bytes:
            return result
        if isinstance(result, str | bytes | bytearray | memoryview):
            return result if isinstance(result, str) else bytes(result)
        raise TypeError(
            f"before_record_message returned {type(result).__name__}; it returns the message "
            "(str or bytes) to record, or None to skip it"
        )


# --- matchers ------------------------------------------------------------------------------------


def matcher(match: Match) -> MatchFunction | None:
    """The comparison for `match`; None for ``"exact"`` (the replay indexes payloads then).

    ``"json"``: equal as JSON, ignoring key order and whitespace. ``"json_subset"``: the
    recorded JSON is contained in the client's (every recorded key there, with a contained
    value; other values, lists included, equal). A compiled regex: found in the client's
    message (`re.search`), and when it has groups, capturing the same in the recorded one.
    Text that is not JSON compares exactly; binary messages compare as bytes; a callable
    ``(recorded, actual) -> bool`` decides alone. ``"socket.io"`` (`SocketIOMatch`) and
    ``"graphql"`` (`GraphQLMatch`): by event and arguments, by operation name and variables.

    Raises:
        ValueError: `match` is none of these.
    """
    if isinstance(match, re.Pattern):
        if not isinstance(match.pattern, str):
            raise ValueError(
                "match: a regex on bytes is not used (binary messages compare as bytes); "
                "compile a str pattern, or pass a callable for binary messages"
            )
        return _text_rule(functools.partial(_regex_matches, match))
    if match == "exact":
        return None
    if match == "json":
        return _text_rule(lambda r, a: _canonical(r) == _canonical(a))
    if match == "json_subset":
        return _text_rule(_json_subset)
    if match == "socket.io":
        return SocketIOMatch()
    if match == "graphql":
        return GraphQLMatch()
    if callable(match):
        return match
    raise ValueError(
        "match must be 'exact', 'json', 'json_subset', 'socket.io', 'graphql', a compiled regex "
        f"or a callable (recorded, actual) -> bool, not {match!r}"
    )


class SocketIOMatch(ProtocolMatch):
    """Socket.IO (Engine.IO v4) messages, matched by what they mean: an event by its
    namespace, name and arguments (binary attachments in their own messages, as bytes), not by
    the ack id the client gave it; a namespace connect by the namespace, not its auth payload
    (tokens); an ack of the client's by the server's ack id and its values; anything else as it
    is. The replay's acks answer the ack ids this client used."""

    def __init__(self) -> None:
        self.acks: dict[int, int] = {}  # recorded ack id -> this client's

    def __call__(self, recorded: Message, actual: Message) -> bool:
        return bool(_sio_key(recorded) == _sio_key(actual))

    def bind(self, recorded: Message, actual: Message) -> None:
        r, a = _sio_packet(recorded), _sio_packet(actual)
        if r is not None and a is not None and r.id is not None and a.id is not None:
            if r.type in (SIO.EVENT, SIO.BINARY_EVENT):
                self.acks[r.id] = a.id

    def answer(self, message: Message) -> Message:
        packet = _sio_packet(message)
        if packet is None or packet.type not in (SIO.ACK, SIO.BINARY_ACK):
            return message
        live = self.acks.get(packet.id) if packet.id is not None else None
        if live is None or not isinstance(message, str):
            return message
        found = _ACK_ID.match(message)
        if found is None:
            return message
        return message[: found.start(1)] + str(live) + message[found.end(1) :]

    def quiet(self, message: Message) -> bool:
        """Pongs, the upgrade and noop packets, and goodbyes (Engine.IO's close, a namespace's
        disconnect): their timing is the client's, and no answer is due."""
        try:
            kind, _ = decode_eio(message)
        except ValueError:
            return False
        if kind is not EIO.MESSAGE:
            return kind in (EIO.PONG, EIO.CLOSE, EIO.UPGRADE, EIO.NOOP)
        packet = _sio_packet(message)
        return packet is not None and packet.type is SIO.DISCONNECT


#: An Engine.IO message packet holding a Socket.IO ack: the ack id is group 1.
_ACK_ID = re.compile(r"4[36](?:\d+-)?(?:/[^,]*,)?(\d+)")


def _sio_packet(message: Message) -> Packet | None:
    """The Socket.IO packet of an Engine.IO message packet, else None."""
    if not isinstance(message, str) or not message.startswith("4"):
        return None
    try:
        return decode_sio(message[1:])[0]
    except ValueError:
        return None


def _sio_key(message: Message) -> Any:
    packet = _sio_packet(message)
    if packet is None:
        try:
            kind, data = decode_eio(message)
        except ValueError:
            return ("raw", message)
        return ("eio", kind, data) if kind is not EIO.MESSAGE else ("raw", message)
    if packet.type in (SIO.EVENT, SIO.BINARY_EVENT):
        return (packet.type, packet.namespace, _sorted(packet.data))
    if packet.type is SIO.CONNECT:
        return (packet.type, packet.namespace)
    return (packet.type, packet.namespace, packet.id, _sorted(packet.data))


class GraphQLMatch(ProtocolMatch):
    """GraphQL over WebSocket messages (both protocols), matched by what they mean: an
    operation (``subscribe``, the legacy ``start``) by its operation name and variables (by
    its query when it has no name), not by the id the client gave it; a ``complete`` or
    ``stop`` by the operation it ends; ``connection_init`` regardless of its payload (tokens);
    anything else as JSON. The replay's answers carry this client's operation ids."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}  # recorded operation id -> this client's

    def __call__(self, recorded: Message, actual: Message) -> bool:
        r, a = _gql(recorded), _gql(actual)
        if r is None or a is None:
            return recorded == actual
        kind = r.get("type")
        if kind != a.get("type"):
            return False
        if kind in ("subscribe", "start"):
            return bool(_operation_key(recorded) == _operation_key(actual))
        if kind in ("complete", "stop"):
            return bool(self.ids.get(str(r.get("id"))) == a.get("id"))
        if kind == "connection_init":
            return True
        return _sorted(r) == _sorted(a)

    def bind(self, recorded: Message, actual: Message) -> None:
        r, a = _gql(recorded), _gql(actual)
        if r is not None and a is not None and r.get("type") in ("subscribe", "start"):
            self.ids[str(r.get("id"))] = str(a.get("id"))

    def answer(self, message: Message) -> Message:
        parsed = _gql(message)
        if parsed is None or str(parsed.get("id")) not in self.ids:
            return message
        return json.dumps({**parsed, "id": self.ids[str(parsed["id"])]})

    def quiet(self, message: Message) -> bool:
        """A pong, the end of an operation (``complete``, the legacy ``stop``: the server may
        have ended it first) and the legacy ``connection_terminate``: no answer is due."""
        parsed = _gql(message)
        return parsed is not None and parsed.get("type") in _QUIET_GRAPHQL


_QUIET_GRAPHQL = ("pong", "complete", "stop", "connection_terminate")


def _gql(message: Message) -> dict[str, Any] | None:
    parsed = _parsed(message) if isinstance(message, str) else _NOT_JSON
    return parsed if isinstance(parsed, dict) else None


def _operation_key(message: Message) -> Any:
    op = operation_from_message(message)
    if op is None:
        return None
    name = op.operation_name
    return (name, " ".join(op.query.split()) if name is None else None, _sorted(op.variables))


def _text_rule(rule: Callable[[str, str], bool]) -> MatchFunction:
    def matches(recorded: Message, actual: Message) -> bool:
        if isinstance(recorded, str) and isinstance(actual, str):
            return rule(recorded, actual)
        return type(recorded) is type(actual) and recorded == actual

    return matches


def _regex_matches(pattern: re.Pattern[str], recorded: str, actual: str) -> bool:
    found = pattern.search(actual)
    if found is None or not pattern.groups:
        return found is not None
    in_recorded = pattern.search(recorded)
    return in_recorded is not None and in_recorded.groups() == found.groups()


_NOT_JSON = object()


@functools.lru_cache(maxsize=4096)
def _parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _NOT_JSON


@functools.lru_cache(maxsize=4096)
def _canonical(text: str) -> str:
    value = _parsed(text)
    if value is _NOT_JSON:
        return "\0" + text  # never equal to JSON's canonical form
    return _sorted(value)


def _sorted(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _json_subset(recorded: str, actual: str) -> bool:
    r, a = _parsed(recorded), _parsed(actual)
    if r is _NOT_JSON or a is _NOT_JSON:
        return recorded == actual
    return _contains(r, a)


def _contains(recorded: Any, actual: Any) -> bool:
    if isinstance(recorded, dict):
        return isinstance(actual, dict) and all(
            k in actual and _contains(v, actual[k]) for k, v in recorded.items()
        )
    # 1 == 1.0 == True in Python, not in JSON: compare what JSON would write
    return json.dumps(recorded, sort_keys=True) == json.dumps(actual, sort_keys=True)


# --- reports -------------------------------------------------------------------------------------

#: How many distinct recorded messages `closest` compares at most (difflib is quadratic).
_CLOSEST_POOL = 2000


def closest(message: Message, recorded: Iterable[Message], n: int = 3) -> list[Message]:
    """The `n` recorded messages most like `message` (difflib's ratio), most alike first."""
    pool: dict[str, Message] = {}
    for m in recorded:
        pool.setdefault(_shown(m), m)
        if len(pool) >= _CLOSEST_POOL:
            break
    found = difflib.get_close_matches(_shown(message), list(pool), n=n, cutoff=0)
    return [pool[k] for k in found]


def _shown(message: Message) -> str:
    return message if isinstance(message, str) else repr(message)
