"""HAR files with WebSocket conversations: reading, the replay matcher, and writing.

Pure: this module imports neither mitmproxy nor asyncio. A conversation is data; `Replay` says
what to send for each thing the client does, and the caller sends it.

The WebSocket entries are in Chrome's shape, which Chrome DevTools, Playwright's
``record_har_path`` and mitmproxy's ``hardump`` all write::

    {"_resourceType": "websocket", "request": {"url": "wss://host/path?q"}, ...,
     "_webSocketMessages": [{"type": "send" | "receive", "time": 1764390000.25,
                             "opcode": 1 | 2, "data": "text, or base64 for opcode 2"}],
     "_webSocketClose": {"code": 1000, "reason": "bye", "by": "server", "time": ...}}

``type`` is the client's view (``send``: the client sent it). ``_webSocketClose`` is this
project's addition (the others do not record closes). ``time`` is epoch seconds in Chrome's
and mitmproxy's files and epoch milliseconds in Playwright's; only gaps within one entry are
used, so milliseconds are recognised by their size and scaled.

Playwright can keep each entry's messages in a file of their own instead, one JSON message per
line, named by ``response.content._file``: next to the HAR (``record_har_content="attach"``),
or in the same ``.zip`` as the HAR (a ``record_har_path`` ending in ``.zip``, whose HAR is the
archive's ``har.har``). Both are read; recordings are written as one ``.har`` file, each
entry on a line of its own but its messages, one per line.

Files are untrusted input: each is size-limited before it is read, and anything not as
described (types, numbers, text that UTF-8 cannot encode, attached files outside the HAR's
folder) is a ValueError that names the file, the entry and what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import datetime
import json
import math
import os
import stat
import tempfile
import zipfile
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Literal

from ._whatwg_url import parse_url

__all__ = [
    "CREATOR",
    "Conversation",
    "Har",
    "HarClose",
    "ProtocolMatch",
    "Recording",
    "RecordingFile",
    "Replay",
    "Step",
    "encode_entry",
    "entry_url",
    "exact",
    "kept_entries",
    "load_har",
    "merge_entries",
    "read_har",
    "write_har",
]

#: ``log.creator`` of the HARs this project writes.
CREATOR = {"name": "mitm_wsroute", "version": "0.1.0"}
#: The page that recorded entries belong to (HAR viewers group entries by page).
PAGE_ID = "wsroute"
#: Default `load_har` ``max_size``: the largest HAR read, in bytes (1 GiB).
MAX_SIZE = 1 << 30
#: Default `load_har` ``max_attached_size``: its attached message files together (1 GiB).
MAX_ATTACHED_SIZE = 1 << 30
#: Longest ``request.url`` read: servers refuse far shorter request lines (8 to 16 KiB).
_MAX_URL = 64 * 1024
#: Times above this are epoch milliseconds (Playwright), not seconds (year 5138 in seconds).
_MS_THRESHOLD = 1e11

Message = str | bytes
#: An attached file's bytes by its name (``response.content._file``).
Attachments = Callable[[str], bytes]
Closer = Literal["client", "server"]


@dataclass(frozen=True, slots=True)
class HarClose:
    """How a recorded socket ended: `code` None for an empty close frame, 1006 for a drop."""

    code: int | None
    reason: str | None
    #: Who closed first: the client, or the server (through the proxy).
    by: Closer
    time: float | None = None


#: `Recording.state`: how many messages it had, and its close.
RecordingState = tuple[int, HarClose | None]


@dataclass(slots=True)
class Conversation:
    """One WebSocket entry: the messages as its client saw them, in order.

    Kept compact (parallel arrays, the parsed strings shared) so that a HAR of 100,000
    messages costs about its file size in memory.
    """

    url: str
    #: Position of the entry in ``log.entries``, for error messages.
    index: int
    #: Per message: 1 when the client sent it, 0 when the client received it.
    sent: bytearray
    #: Per message, in seconds (only differences count).
    times: array[float]
    data: list[Message]
    close: HarClose | None = None
    #: When the socket opened (seconds, same clock as `times`), if the entry says.
    started: float | None = None
    #: The subprotocol the server chose, if recorded.
    protocol: str | None = None

    def __len__(self) -> int:
        return len(self.data)

    def messages(self) -> Iterator[tuple[bool, float, Message]]:
        """(sent by the client, time, payload) per message, in order."""
        return zip(map(bool, self.sent), self.times, self.data, strict=True)


@dataclass(slots=True)
class Har:
    """The WebSocket entries of a HAR file, by normalised ws(s) URL, in file order."""

    path: str
    by_url: dict[str, list[Conversation]]

    def entries(self, url: str) -> list[Conversation]:
        return self.by_url.get(url, [])

    def __len__(self) -> int:
        return sum(len(c) for c in self.by_url.values())


# --- reading -------------------------------------------------------------------------------------


def entry_url(raw: str) -> str | None:
    """The normalised ws(s) URL of an entry's ``request.url`` (query kept, fragment dropped;
    ``http(s)`` counts as ``ws(s)``, as mitmproxy writes them), or None if it is not one."""
    raw = raw.split("#", 1)[0]
    scheme, sep, rest = raw.partition(":")
    scheme = {"http": "ws", "https": "wss"}.get(scheme.lower(), scheme.lower())
    url = parse_url(f"{scheme}{sep}{rest}")
    if url is None or url.scheme not in ("ws", "wss") or not url.host:
        return None
    return url.href


def load_har(
    path: str,
    *,
    allow_empty: bool = False,
    max_size: int = MAX_SIZE,
    max_attached_size: int = MAX_ATTACHED_SIZE,
) -> Har:
    """Read a HAR file's WebSocket entries.

    Args:
        allow_empty: a HAR without WebSocket entries is fine (a recording adds them).
        max_size: the largest HAR read, in bytes: the ``.har`` file, or the ``.har`` in a
            ``.zip`` (uncompressed); checked before it is read. 0 for no limit.
        max_attached_size: the most bytes its attached message files may hold together
            (Playwright's ``.jsonl`` files, beside the ``.har`` or in the ``.zip``,
            uncompressed); each is checked against what is left before it is read. 0 for no
            limit.

    Raises:
        ValueError: the file cannot be read, is too large, is not JSON (``NaN`` and
            ``Infinity`` are not JSON; nesting too deep for the parser), is not a HAR, has no
            WebSocket entries (unless `allow_empty`), or an entry is broken (a field of the
            wrong type, bad base64, an unknown opcode, a time that is not a finite number, text
            that UTF-8 cannot encode, a URL over 64 KiB, an attached file outside the HAR's
            folder, ...); the message names the file, the entry index and what is wrong.
    """
    with _parse(path, True, max_size, max_attached_size) as (doc, attachments):
        return read_har(doc, path, allow_empty=allow_empty, attachments=attachments)


@contextlib.contextmanager
def _parse(
    path: str,
    compact: bool = True,
    max_size: int = MAX_SIZE,
    max_attached_size: int = MAX_ATTACHED_SIZE,
) -> Iterator[tuple[Any, Attachments]]:
    """The parsed file, and its attached files, while in this context; with `compact`,
    WebSocket messages as tuples (for reading only). A ``.zip`` is Playwright's archive, open
    while in the context: its HAR and attached files are members; else attached files are
    beside the HAR. The sizes are limits in bytes, 0 for none (see `load_har`)."""
    hook = _compact_message if compact else None
    budget = _Budget(max_attached_size, "max_attached_size")
    with contextlib.ExitStack() as stack:
        try:
            if not path.lower().endswith(".zip"):
                text = _read_text(path, _Budget(max_size, "max_size"), "the HAR file")
                doc, attachments = _json(text, hook), _beside(path, budget)
            else:
                _check_regular(path, "the HAR file")
                archive = stack.enter_context(zipfile.ZipFile(path))
                doc = _archived_har(archive, path, hook, max_size)
                attachments = _in_archive(archive, budget)
        except OSError as e:
            raise ValueError(f"{path}: cannot read the HAR file: {e.strerror or e}") from e
        except zipfile.BadZipFile as e:
            raise ValueError(f"{path}: not a HAR archive, invalid .zip: {e}") from e
        except (_InvalidJSON, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a HAR file, invalid JSON: {e}") from None
        except _Refused as e:
            raise ValueError(f"{path}: {e}") from None
        yield doc, attachments


class _Refused(ValueError):
    """A file is not read: too large, or not a regular file (the message says which file)."""


class _InvalidJSON(ValueError):
    """Not JSON as a HAR holds it (the message says why)."""


@dataclass(slots=True)
class _Budget:
    """A size limit in bytes shared by the files read against it (0: no limit), named as the
    argument that sets it (``max_size``, ``max_attached_size``)."""

    limit: int
    name: str
    used: int = 0

    def most(self, size: int, what: str) -> int:
        """Check a file's declared `size` before it is read; how many bytes to read of it at
        most (-1: all), which is one more than is left, so that reading that many shows a
        file larger than it said."""
        self._check(size, what)
        return self.limit - self.used + 1 if self.limit else -1

    def took(self, size: int, what: str) -> None:
        """Count a file that was read."""
        self._check(size, what)
        self.used += size

    def _check(self, size: int, what: str) -> None:
        if self.limit and size > self.limit - self.used:
            left = "" if not self.used else f" ({self.limit - self.used:,} bytes left of it)"
            raise _Refused(
                f"{what} is too large: {size:,} bytes or more, over the limit of "
                f"{self.limit:,} bytes{left} ({self.name}; the wsroute_har_{self.name} "
                "option; 0 for no limit)"
            )


def _check_regular(path: str, what: str) -> int:
    """The size of the regular file at `path`; a device or a pipe (endless, or never ready) is
    refused before it is opened."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _Refused(f"{what} is not a regular file")
    return st.st_size


def _read_text(path: str, budget: _Budget, what: str) -> str:
    """A text file, refused before it is read if larger than the budget, and read no further
    than that if it grows meanwhile."""
    most = budget.most(_check_regular(path, what), what)
    with open(path, encoding="utf-8-sig") as f:  # text: no bytes copy beside the str
        text = f.read(most)  # characters: no more than bytes
    budget.took(len(text), what)
    return text


def _refuse_constant(name: str) -> Any:
    raise _InvalidJSON(f"{name} is not a JSON number")


def _json(text: str, hook: Any) -> Any:
    """Parse JSON, refusing ``NaN`` and ``Infinity`` (which Python's json accepts) and nesting
    deeper than the parser can take.

    Raises:
        _InvalidJSON: a ValueError that says what is wrong.
    """
    try:
        return json.loads(text, object_hook=hook, parse_constant=_refuse_constant)
    except RecursionError:
        raise _InvalidJSON("nested too deeply") from None
    except _InvalidJSON:
        raise
    except ValueError as e:  # json.JSONDecodeError, or an integer of too many digits
        raise _InvalidJSON(str(e)) from None


def _archived_har(archive: zipfile.ZipFile, path: str, hook: Any, max_size: int) -> Any:
    names = archive.namelist()
    hars = ["har.har"] if "har.har" in names else [n for n in names if n.endswith(".har")]
    if len(hars) != 1:
        raise ValueError(
            f"{path}: not a HAR archive: it holds no har.har (Playwright's name) and "
            f"{'several' if hars else 'no'} other .har files"
        )
    what = f"its {hars[0]}"
    data = _read_member(archive, hars[0], _Budget(max_size, "max_size"), what)
    return _json(data.decode("utf-8-sig"), hook)


def _read_member(archive: zipfile.ZipFile, name: str, budget: _Budget, what: str) -> bytes:
    """A member, its declared size checked before it is read, and read no further than the
    budget allows nor further than its header says (a header may lie: a zip bomb is never
    inflated past either)."""
    info = archive.getinfo(name)
    most = budget.most(info.file_size, what)
    declared = info.file_size + 1  # zipfile inflates no further (and then fails its CRC)
    with archive.open(info) as member:
        data = member.read(declared if most < 0 else min(most, declared))
    budget.took(len(data), what)
    return data


def _attached_name(name: str) -> str:
    """A ``_file`` name, refused unless it is a plain file name (a HAR must not make the proxy
    read files elsewhere)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"the attached file name {name!r} is not a plain file name")
    return name


def _beside(path: str, budget: _Budget) -> Attachments:
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))

    def read(name: str) -> bytes:
        what = f"its attached file {name!r}"
        target = os.path.realpath(os.path.join(folder, _attached_name(name)))
        if os.path.commonpath([folder, target]) != folder:  # a symbolic link out of it
            raise ValueError(f"{what} leads out of the HAR's folder {folder} (to {target})")
        try:
            most = budget.most(_check_regular(target, what), what)
            with open(target, "rb") as f:
                data = f.read(most)
            budget.took(len(data), what)
        except OSError as e:
            raise ValueError(f"cannot read {what}: {e.strerror or e}") from e
        return data

    return read


def _in_archive(archive: zipfile.ZipFile, budget: _Budget) -> Attachments:
    def read(name: str) -> bytes:
        what = f"its attached file {name!r}"
        try:
            return _read_member(archive, _attached_name(name), budget, what)
        except KeyError:
            raise ValueError(f"{what} is not in the archive") from None
        except (OSError, zipfile.BadZipFile) as e:
            raise ValueError(f"cannot read {what}: {e}") from e

    return read


def _no_attachments(name: str) -> bytes:
    raise ValueError(
        f"the messages are in an attached file ({name!r}, Playwright's content='attach' or a "
        ".zip HAR), and this HAR was given without its folder: load it from its file"
    )


def _compact_message(obj: dict[str, Any]) -> Any:
    """A WebSocket message as a tuple while the JSON is parsed: a dict per message would take
    several times the file's size in memory at once."""
    if "opcode" in obj and len(obj) == 4:
        try:
            return (obj["type"], obj["time"], obj["opcode"], obj["data"])
        except KeyError:
            pass
    return obj


def _entries(doc: Any, path: str) -> list[Any]:
    log = doc.get("log") if isinstance(doc, dict) else None
    entries = log.get("entries") if isinstance(log, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: not a HAR file (no log.entries list)")
    return entries


def read_har(
    doc: Any,
    path: str = "<har>",
    *,
    allow_empty: bool = False,
    attachments: Attachments = _no_attachments,
) -> Har:
    """`load_har` for a parsed document; `path` is for error messages, `attachments` reads
    the files that hold an entry's messages."""
    by_url: dict[str, list[Conversation]] = {}
    for index, entry in enumerate(_entries(doc, path)):
        if not isinstance(entry, dict) or entry.get("_resourceType") != "websocket":
            continue  # HTTP entries are not replayed
        conversation = _conversation(entry, index, path, attachments)
        by_url.setdefault(conversation.url, []).append(conversation)
    if not by_url and not allow_empty:
        raise ValueError(
            f"{path}: no WebSocket entries (entries with _resourceType 'websocket' and "
            "_webSocketMessages, as Chrome DevTools, Playwright and mitmproxy write them)"
        )
    return Har(path, by_url)


def _conversation(
    entry: dict[str, Any], index: int, path: str, attachments: Attachments
) -> Conversation:
    where = f"{path}: entry {index}"
    request = _field(entry, "request", dict, where) or {}
    raw_url = request.get("url")
    if not isinstance(raw_url, str):
        raise ValueError(f"{where}: no request.url")
    if len(raw_url) > _MAX_URL:
        raise ValueError(
            f"{where}: request.url is {len(raw_url):,} characters long, more than a server "
            f"takes (at most {_MAX_URL:,} are read)"
        )
    url = entry_url(raw_url)
    if url is None:
        raise ValueError(f"{where}: request.url {raw_url!r:.100} is not a ws(s) or http(s) URL")
    response = _field(entry, "response", dict, where) or {}
    content = _field(response, "content", dict, where, "response.content") or {}
    if "_webSocketMessages" not in entry and "_file" in content:
        name = _field(content, "_file", str, where, "response.content._file")
        messages = _attached_messages(attachments, name, where)
    else:
        messages = _field(entry, "_webSocketMessages", list, where) or []
    n = len(messages)
    sent = bytearray(n)
    times = array("d", bytes(8 * n))
    data: list[Message] = [""] * n
    b64decode = base64.b64decode
    for i, m in enumerate(messages):
        try:
            if type(m) is tuple:  # made by _compact_message
                kind, t, opcode, payload = m
            else:
                kind, t, opcode, payload = m["type"], m["time"], m["opcode"], m["data"]
        except (KeyError, TypeError):
            raise ValueError(
                f"{where}: message {i} is not {{type, time, opcode, data}}: {m!r:.100}"
            ) from None
        if kind == "send":
            sent[i] = 1
        elif kind != "receive":
            raise ValueError(f"{where}: message {i} has type {kind!r:.60}, not 'send' or 'receive'")
        if type(payload) is not str:
            raise ValueError(f"{where}: message {i} data is not a string")
        if type(opcode) is int and opcode == 1:  # type: bool is an int, and so is True == 1
            if not payload.isascii():
                _check_utf8(payload, f"{where}: message {i} (opcode 1, text) data")
            data[i] = payload
        elif type(opcode) is int and opcode == 2:
            try:
                data[i] = b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(
                    f"{where}: message {i} (opcode 2, binary) data is not base64: {payload!r:.60}"
                ) from None
        else:
            raise ValueError(
                f"{where}: message {i} has opcode {opcode!r:.60}; only 1 (text) and 2 (binary) "
                "are messages"
            )
        times[i] = _time(t, f"{where}: message {i} time")
    if n and max(times[0], times[-1]) > _MS_THRESHOLD:
        times = array("d", (t / 1000 for t in times))
    return Conversation(
        url,
        index,
        sent,
        times,
        data,
        close=_close(entry.get("_webSocketClose"), where),
        started=_started(_field(entry, "startedDateTime", str, where)),
        protocol=_protocol(response, where),
    )


def _field(obj: dict[str, Any], key: str, kind: type, where: str, name: str = "") -> Any:
    """`obj[key]`, None when it is missing or null; refused when it is of another type."""
    value = obj.get(key)
    if value is not None and not isinstance(value, kind):
        raise ValueError(f"{where}: {name or key} is not {_JSON_TYPES[kind]}: {value!r:.60}")
    return value


_JSON_TYPES: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}


def _time(t: Any, what: str) -> float:
    """A time: a finite number (not a bool, not a string), in seconds or milliseconds."""
    if type(t) is float or type(t) is int:
        try:
            seconds = float(t)
        except OverflowError:  # an integer beyond floats
            seconds = math.inf
        if math.isfinite(seconds):
            return seconds
    raise ValueError(f"{what} {t!r:.40} is not a finite number")


def _check_utf8(text: str, what: str) -> None:
    """Refuse text that UTF-8 cannot encode (a lone surrogate, as JSON's ``"\\ud800"``): it
    could never be sent."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"{what} cannot be encoded in UTF-8 ({e.reason} at character {e.start}: "
            f"{text[e.start : e.end]!r})"
        ) from None


def _attached_messages(attachments: Attachments, name: str, where: str) -> list[Any]:
    """An entry's messages from its attached file: one JSON message per line."""
    try:
        lines = attachments(name).decode("utf-8-sig").splitlines()
    except ValueError as e:  # UnicodeDecodeError too
        raise ValueError(f"{where}: {e}") from e
    messages = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                messages.append(_json(line, _compact_message))
            except ValueError as e:
                raise ValueError(f"{where}: {name}, line {number}: invalid JSON: {e}") from e
    return messages


def _close(raw: Any, where: str) -> HarClose | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: _webSocketClose is not an object")
    code, reason, by, t = raw.get("code"), raw.get("reason"), raw.get("by"), raw.get("time")
    if code is not None and (type(code) is not int or not 0 <= code <= 0xFFFF):
        raise ValueError(
            f"{where}: _webSocketClose code {code!r:.40} is not a close code (an integer "
            "from 0 to 65535)"
        )
    if reason is not None:
        if not isinstance(reason, str):
            raise ValueError(f"{where}: _webSocketClose reason {reason!r:.60} is not a string")
        _check_utf8(reason, f"{where}: _webSocketClose reason")
    if by not in ("client", "server"):
        raise ValueError(f"{where}: _webSocketClose by {by!r:.40} is not 'client' or 'server'")
    time = None if t is None else _time(t, f"{where}: _webSocketClose time")
    if time is not None and time > _MS_THRESHOLD:
        time /= 1000
    return HarClose(code, reason, by, time)


def _started(raw: str | None) -> float | None:
    """``startedDateTime`` in seconds; None when missing or not an ISO 8601 date (it is only
    used for the gap before the first message)."""
    if raw is None:
        return None
    try:
        return datetime.datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def _protocol(response: dict[str, Any], where: str) -> str | None:
    headers = _field(response, "headers", list, where, "response.headers") or []
    for h in headers:
        if isinstance(h, dict) and str(h.get("name", "")).lower() == "sec-websocket-protocol":
            value = _field(h, "value", str, where, "the Sec-WebSocket-Protocol header's value")
            return value.strip() if value is not None else None
    return None


# --- replay --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """Something to do towards the client, `delay` seconds after the step before it (always 0
    unless timing is kept): send `message`, or, when `close` is set, close the client."""

    delay: float
    message: Message | None = None
    close: HarClose | None = None
    #: The recorded message it plays (-1 for a close), for `Replay.sent`.
    index: int = field(default=-1, compare=False)


class ProtocolMatch:
    """A `Replay` matcher that knows the ids a protocol's client picks (Socket.IO's ack ids,
    GraphQL's operation ids; `cassettes.matcher`): one per replayed socket (`fresh`), it
    matches client messages regardless of those ids, learns which recorded id each live one
    stands for (`bind`), and gives the replay's answers the live ids (`answer`)."""

    def fresh(self) -> ProtocolMatch:
        return type(self)()

    def __call__(self, recorded: Message, actual: Message) -> bool:
        return recorded == actual

    def bind(self, recorded: Message, actual: Message) -> None:
        """`actual` matched `recorded`."""

    def answer(self, message: Message) -> Message:
        """A recorded server message as this client must get it."""
        return message

    def quiet(self, message: Message) -> bool:
        """A client message that asks for no answer (a heartbeat's, a goodbye): when nothing
        recorded matches it, the replay lets it go instead of reporting it."""
        return False


@dataclass(slots=True)
class Replay:
    """The server's side of one recorded conversation, replayed turn by turn.

    The server messages recorded before the first client message are sent on open. Each message
    the client sends is matched to a recorded client message (text and binary never match
    each other unless `match` says so): with ``order="sequential"`` the next one that matches,
    skipping recorded ones that were not sent; with ``order="any"`` the first not played yet.
    The server messages recorded after it, up to the next recorded client message, are the
    answer. A client message with no match gets no answer and changes nothing. So server
    messages go out in recorded order, each at most once, unless `repeats` lets a played
    client message (and its answer) play again once no unplayed one matches. A recorded server
    close (or a dropped connection) comes after the server messages before it.

    Args:
        timing: keep the recorded gap before each server message (``"recorded"``), or send at
            once (``"none"``).
        match: ``(recorded, actual) -> bool`` (see `cassettes.matcher`); None: equal payloads.
        played: per recorded message, 1 once matched (client) or sent (server, see `sent`);
            shared by the replays of one conversation, for `unplayed`.
    """

    conversation: Conversation
    timing: Literal["none", "recorded"] = "none"
    match: Callable[[Message, Message], bool] | None = None
    order: Literal["sequential", "any"] = "sequential"
    repeats: bool = False
    played: bytearray = field(default_factory=bytearray)
    #: Index (among the recorded client messages) of the next one that may match in order.
    position: int = 0
    #: The recorded message the replay got to last: the end of the answer it gave last (or
    #: the client message it matched, if the answer was empty); -1 before any.
    last: int = -1
    #: Per payload, the indices of the recorded client messages with it, ascending.
    _index: dict[Message, list[int]] = field(default_factory=dict)
    _client: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.played) != len(self.conversation):
            self.played = bytearray(len(self.conversation))
        if isinstance(self.match, ProtocolMatch):
            self.match = self.match.fresh()  # its ids are this socket's
        # The recorded client messages, and per payload where they are (built once, O(n)).
        sent, data = self.conversation.sent, self.conversation.data
        i = sent.find(1)
        while i != -1:
            self._client.append(i)
            if self.match is None:
                self._index.setdefault(data[i], []).append(len(self._client) - 1)
            i = sent.find(1, i + 1)

    def open(self) -> list[Step]:
        """What to send when the socket opens."""
        end = self._client[0] if self._client else len(self.conversation)
        self.last = end - 1
        return self._steps(0, end, self.conversation.started)

    def receive(self, message: Message) -> list[Step] | None:
        """What to send for a message from the client (a bytes-like one matches as `bytes`);
        None when nothing recorded matches."""
        message = exact(message)
        n = self._find(message)
        if n is None:
            return None
        if isinstance(self.match, ProtocolMatch):
            self.match.bind(self.conversation.data[self._client[n]], message)
        if self.order == "sequential":
            self.position = max(self.position, n + 1)
        start = self._client[n]
        self.played[start] = 1
        end = self._client[n + 1] if n + 1 < len(self._client) else len(self.conversation)
        self.last = end - 1
        return self._steps(start + 1, end, self.conversation.times[start])

    def sent(self, step: Step) -> None:
        """`step` was carried out (its message counts as played)."""
        if step.index >= 0:
            self.played[step.index] = 1

    def client_messages(self) -> list[Message]:
        """The recorded client messages, in order."""
        return [self.conversation.data[i] for i in self._client]

    def _find(self, message: Message) -> int | None:
        """Which recorded client message `message` matches (its index among them)."""
        client, played, data = self._client, self.played, self.conversation.data
        candidates: Sequence[int]
        if self.match is None:  # equal payloads: look them up
            candidates = self._index.get(message, [])
            match: Callable[[Message, Message], bool] = _true
        else:
            candidates, match = range(len(client)), self.match
        if self.order == "sequential":
            first: Iterable[int] = islice(
                candidates, bisect.bisect_left(candidates, self.position), None
            )
        else:
            first = (n for n in candidates if not played[client[n]])
        found = next((n for n in first if match(data[client[n]], message)), None)
        if found is None and self.repeats:
            again = (n for n in candidates if played[client[n]])
            found = next((n for n in again if match(data[client[n]], message)), None)
        return found

    @property
    def done(self) -> bool:
        """Every recorded client message was matched or skipped: nothing more will be sent."""
        return self.position >= len(self._client)

    def _steps(self, start: int, end: int, before: float | None) -> list[Step]:
        conversation = self.conversation
        timed = self.timing == "recorded"
        steps = []
        times, data = conversation.times, conversation.data
        answer = self.match.answer if isinstance(self.match, ProtocolMatch) else None
        for i in range(start, end):
            t = times[i]
            message = data[i] if answer is None else answer(data[i])
            steps.append(Step(_gap(before, t) if timed else 0.0, message, index=i))
            before = t
        close = conversation.close
        if end == len(conversation) and close is not None and close.by == "server":
            steps.append(Step(_gap(before, close.time) if timed else 0.0, close=close))
        return steps


def _true(recorded: Message, actual: Message) -> bool:
    return True


def _gap(before: float | None, t: float | None) -> float:
    """The recorded gap, when both ends are known and it is plausible (0 to 1 hour)."""
    if before is None or t is None:
        return 0.0
    gap = t - before
    return gap if 0 < gap < 3600 else 0.0


# --- writing -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Recording:
    """One socket's conversation while it is recorded, as its client sees it."""

    url: str
    started: float
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    protocol: str | None = None
    messages: list[tuple[bool, float, Message]] = field(default_factory=list)
    close: HarClose | None = None
    #: The recorded conversation this recording grows (``record_mode="new_episodes"``): its
    #: entry is that one's messages with these inserted, and its close unless one is recorded.
    base: Conversation | None = None
    #: With `base`: per message, the index of the base message it comes after (-1: before all).
    after: list[int] = field(default_factory=list)

    def message(self, sent: bool, data: Message, time: float, after: int = -1) -> None:
        """Record a message, kept as exactly `str` or `bytes` (see `exact`); with `base`,
        after its message `after`."""
        self.after.append(after)  # first: `messages[:n]` always has its `after[:n]`
        self.messages.append((sent, time, exact(data)))

    def _messages(self, count: int) -> list[tuple[bool, float, Message]]:
        """The first `count` messages recorded, inserted into `base`'s."""
        added = self.messages if count == len(self.messages) else self.messages[:count]
        if self.base is None:
            return added
        by_place: dict[int, list[tuple[bool, float, Message]]] = {}
        for after, m in zip(self.after, added, strict=False):
            by_place.setdefault(after, []).append(m)
        merged = by_place.get(-1, [])
        for i, m in enumerate(self.base.messages()):
            merged.append(m)
            merged += by_place.get(i, ())
        return merged

    def state(self) -> RecordingState:
        """How far the recording got: cheap, and ``entry(state)`` later is the entry as it was
        then, whatever was recorded meanwhile (messages are only ever appended)."""
        return len(self.messages), self.close

    def closed(self, code: int | None, reason: str | None, by: Closer, time: float) -> bool:
        """Record the first close; False for later ones."""
        if self.close is not None:
            return False
        self.close = HarClose(code, reason, by, time)
        return True

    def entry(self, state: RecordingState | None = None) -> dict[str, Any]:
        """The HAR 1.2 entry, in Chrome's shape plus ``_webSocketClose``: of the recording as
        it is, or as it was at `state`."""
        count, close = state if state is not None else self.state()
        messages = self._messages(count)
        started, protocol = self.started, self.protocol
        if self.base is not None:
            close = close or self.base.close
            started = self.base.started or started
            protocol = self.base.protocol or protocol
        last = close.time if close and close.time else None
        if messages:
            last = max(last or 0.0, messages[-1][1])
        duration = round(1000 * (last - started), 3) if last else 0
        query = parse_url(self.url)
        response_headers = [{"name": "Upgrade", "value": "websocket"}]
        if protocol:
            response_headers.append({"name": "Sec-WebSocket-Protocol", "value": protocol})
        entry: dict[str, Any] = {
            "pageref": PAGE_ID,
            "startedDateTime": _iso(started),
            "time": max(duration, 0),
            "request": {
                "method": "GET",
                "url": self.url,
                "httpVersion": "HTTP/1.1",
                "cookies": [],
                "headers": [{"name": k, "value": v} for k, v in self.request_headers],
                "queryString": _query(query.query if query else None),
                "headersSize": -1,
                "bodySize": 0,
            },
            "response": {
                "status": 101,
                "statusText": "Switching Protocols",
                "httpVersion": "HTTP/1.1",
                "cookies": [],
                "headers": response_headers,
                "content": {"size": 0, "mimeType": "x-unknown"},
                "redirectURL": "",
                "headersSize": -1,
                "bodySize": 0,
            },
            "cache": {},
            "timings": {
                "blocked": -1,
                "dns": -1,
                "connect": -1,
                "send": 0,
                "wait": 0,
                "receive": 0,
                "ssl": -1,
            },
            "_resourceType": "websocket",
            "_webSocketMessages": [
                {"type": "send" if sent else "receive", "time": t, "opcode": 1, "data": d}
                if isinstance(d, str)
                else {
                    "type": "send" if sent else "receive",
                    "time": t,
                    "opcode": 2,
                    "data": base64.b64encode(d).decode(),
                }
                for sent, t, d in messages
            ],
        }
        if close is not None:
            c = close
            entry["_webSocketClose"] = {
                "code": c.code,
                "reason": c.reason,
                "by": c.by,
                "time": c.time,
            }
        return entry


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat().replace("+00:00", "Z")


def _query(query: str | None) -> list[dict[str, str]]:
    from urllib.parse import parse_qsl

    return [{"name": k, "value": v} for k, v in parse_qsl(query or "", keep_blank_values=True)]


def exact(message: object) -> Message:
    """`message` as exactly `str` (text) or `bytes` (binary), the only types a HAR replay or
    recording hands out or stores: a bytes-like object (`bytearray`, `memoryview`, a subclass
    of `bytes`) copied into `bytes`, a subclass of `str` made a `str`.

    Raises:
        TypeError: `message` is neither text nor bytes-like.
    """
    if type(message) is str or type(message) is bytes:
        return message
    if isinstance(message, str):
        return str.__str__(message)
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message)
    raise TypeError(f"a message is str or bytes, not {type(message).__name__}")


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)
_ASCII_ENCODER = json.JSONEncoder(allow_nan=False)


def encode_entry(entry: dict[str, Any]) -> str:
    """An entry's JSON text as `write_har` writes it: the entry on one line but its
    ``_webSocketMessages``, one message per line (diffs of a recording stay readable). Text
    that UTF-8 cannot encode (from a file another program wrote) is written escaped."""
    return _utf8_json(lambda encoder: _encode_entry(entry, encoder))


def _utf8_json(encode: Callable[[json.JSONEncoder], str]) -> str:
    """JSON text from `encode`, non-ASCII characters as they are, unless UTF-8 cannot encode
    one of them (a lone surrogate): then all escaped."""
    text = encode(_ENCODER)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = encode(_ASCII_ENCODER)
    return text


def _encode_entry(entry: dict[str, Any], encoder: json.JSONEncoder) -> str:
    messages = entry.get("_webSocketMessages")
    if not isinstance(messages, list) or not messages:
        return encoder.encode(entry)
    head = encoder.encode({k: v for k, v in entry.items() if k != "_webSocketMessages"})
    lines = ",\n  ".join(map(encoder.encode, messages))
    return f'{head[:-1]}{", " if head != "{}" else ""}"_webSocketMessages": [\n  {lines}\n ]}}'


def write_har(
    path: str,
    entries: Iterable[dict[str, Any] | str],
    started: float,
    pages: Iterable[Any] = (),
) -> None:
    """Write a HAR 1.2 file atomically: a temporary file in the same folder, written and
    synced, then renamed over `path`, so that a reader (or a crash) never sees a torn file; on
    failure the old file stays and the temporary file is removed.

    Args:
        entries: the entries, as dicts or as their text from `encode_entry`.
        started: when the recording began (epoch seconds), for its page.
        pages: ``log.pages`` to keep; this project's page is added.

    Raises:
        OSError: the file could not be written.
    """
    page = {
        "startedDateTime": _iso(started),
        "id": PAGE_ID,
        "title": "mitm_wsroute recording",
        "pageTimings": {},
    }
    pages = [p for p in pages if not (isinstance(p, dict) and p.get("id") == PAGE_ID)]
    log = {"version": "1.2", "creator": CREATOR, "pages": [*pages, page]}
    head = _utf8_json(lambda encoder: encoder.encode(log))
    texts = (e if isinstance(e, str) else encode_entry(e) for e in entries)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f'{{"log": {head[:-1]}, "entries": [\n')
            for i, text in enumerate(texts):
                if i:
                    f.write(",\n")
                f.write(text)
            f.write("\n]}}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class RecordingFile:
    """The HAR file that recordings are written into: the pages and entries it held when
    recording began (read once, by `kept_entries`), and at each `write` the recordings as they
    are then. An entry that was in the file is dropped when a recording has its URL (unless
    `replace_urls` is False), or replaced in place by a recording that grows it (`base`);
    every recording is kept.

    Each entry is encoded once it is final (an entry that was in the file, a closed
    recording), so that a write costs the entries that changed plus writing the file's bytes,
    not the JSON of the whole file. One `write` at a time; the recordings may grow meanwhile
    (from another thread): each is written as it was when the write began.

    Raises:
        ValueError: as `kept_entries`.
    """

    def __init__(
        self,
        path: str,
        started: float,
        *,
        max_size: int = MAX_SIZE,
        max_attached_size: int = MAX_ATTACHED_SIZE,
        replace_urls: bool = True,
    ) -> None:
        self.path = path
        self.started = started
        #: Drop the old entries of each URL recorded (else a recording with a `base` replaces
        #: that entry in place, and the others are added after the old ones).
        self.replace_urls = replace_urls
        self.pages, self._old = kept_entries(
            path, max_size=max_size, max_attached_size=max_attached_size
        )
        #: (normalised URL for a WebSocket entry, else None; text) per entry of the old file.
        self._old_texts: list[tuple[str | None, str]] | None = None
        #: Per recording (by id, the recording kept so that its id is not reused): the state
        #: last encoded and its text.
        self._texts: dict[int, tuple[Recording, RecordingState, str]] = {}

    def write(self, recordings: Iterable[Recording]) -> int:
        """Write the file with `recordings` (those with a message or a close) in that order,
        after the old entries that remain. Returns how many recordings were written.

        Raises:
            OSError: the file could not be written (it stays as it was).
        """
        if self._old_texts is None:
            self._old_texts = [(_websocket_url(e), encode_entry(e)) for e in self._old]
        states = [(r, r.state()) for r in recordings]
        states = [(r, s) for r, s in states if s[0] or s[1] is not None]
        grown = {r.base.index: self._text(r, s) for r, s in states if r.base is not None}
        urls = {r.url for r, _ in states} if self.replace_urls else set()
        texts = [
            grown.get(i, text)
            for i, (url, text) in enumerate(self._old_texts)
            if i in grown or url is None or url not in urls
        ]
        texts += [self._text(r, s) for r, s in states if r.base is None]
        write_har(self.path, texts, self.started, self.pages)
        return len(states)

    def _text(self, r: Recording, state: RecordingState) -> str:
        cached = self._texts.get(id(r))
        if cached is None or cached[0] is not r or cached[1] != state:
            cached = (r, state, encode_entry(r.entry(state)))
            self._texts[id(r)] = cached
        return cached[2]


def _websocket_url(entry: Any) -> str | None:
    """The normalised URL of a WebSocket entry (of a file `kept_entries` read), else None."""
    if not isinstance(entry, dict) or entry.get("_resourceType") != "websocket":
        return None
    request = entry.get("request")
    url = request.get("url") if isinstance(request, dict) else None
    return entry_url(url) if isinstance(url, str) else None


def kept_entries(
    path: str, *, max_size: int = MAX_SIZE, max_attached_size: int = MAX_ATTACHED_SIZE
) -> tuple[list[Any], list[Any]]:
    """The pages and entries of the HAR at `path` that a recording starts from (none if there
    is no file); the limits as for `load_har`.

    Raises:
        ValueError: the file exists but is not a HAR, or not one `load_har` reads (a recording
            must not overwrite it).
    """
    if path.lower().endswith(".zip"):
        raise ValueError(
            f"{path}: recording into a .zip HAR is not supported; record into a .har path "
            "(the messages are written into it, which Chrome DevTools and replay both read)"
        )
    if not os.path.exists(path):
        return [], []
    with _parse(path, False, max_size, max_attached_size) as (doc, attachments):  # written back
        read_har(doc, path, allow_empty=True, attachments=attachments)  # validates them
    pages = doc["log"].get("pages")
    return (pages if isinstance(pages, list) else []), doc["log"]["entries"]


def merge_entries(
    old: list[dict[str, Any]], recorded: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """`old` without the WebSocket entries for a URL that `recorded` has, then `recorded`."""
    urls = {e["request"]["url"] for e in recorded}
    return [e for e in old if _websocket_url(e) not in urls] + recorded
