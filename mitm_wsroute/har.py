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
archive's ``har.har``). Both are read; recordings are written as one ``.har`` file.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import datetime
import json
import os
import tempfile
import zipfile
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from ._whatwg_url import parse_url

__all__ = [
    "CREATOR",
    "Conversation",
    "Har",
    "HarClose",
    "Recording",
    "Replay",
    "Step",
    "entry_url",
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


def load_har(path: str, *, allow_empty: bool = False) -> Har:
    """Read a HAR file's WebSocket entries.

    Args:
        allow_empty: a HAR without WebSocket entries is fine (a recording adds them).

    Raises:
        ValueError: the file cannot be read, is not JSON, is not a HAR, has no WebSocket entries
            (unless `allow_empty`), or an entry is broken (bad base64, unknown opcode, ...); the
            message names the file, the entry index and what is wrong.
    """
    with _parse(path) as (doc, attachments):
        return read_har(doc, path, allow_empty=allow_empty, attachments=attachments)


@contextlib.contextmanager
def _parse(path: str, compact: bool = True) -> Iterator[tuple[Any, Attachments]]:
    """The parsed file, and its attached files, while in this context; with `compact`,
    WebSocket messages as tuples (for reading only). A ``.zip`` is Playwright's archive, open
    while in the context: its HAR and attached files are members; else attached files are
    beside the HAR."""
    hook = _compact_message if compact else None
    with contextlib.ExitStack() as stack:
        try:
            if not path.lower().endswith(".zip"):
                with open(path, encoding="utf-8-sig") as f:  # text: no bytes copy beside the str
                    doc, attachments = json.load(f, object_hook=hook), _beside(path)
            else:
                archive = stack.enter_context(zipfile.ZipFile(path))
                doc, attachments = _archived_har(archive, path, hook), _in_archive(archive)
        except OSError as e:
            raise ValueError(f"{path}: cannot read the HAR file: {e.strerror or e}") from e
        except zipfile.BadZipFile as e:
            raise ValueError(f"{path}: not a HAR archive, invalid .zip: {e}") from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a HAR file, invalid JSON: {e}") from e
        yield doc, attachments


def _archived_har(archive: zipfile.ZipFile, path: str, hook: Any) -> Any:
    names = archive.namelist()
    hars = ["har.har"] if "har.har" in names else [n for n in names if n.endswith(".har")]
    if len(hars) != 1:
        raise ValueError(
            f"{path}: not a HAR archive: it holds no har.har (Playwright's name) and "
            f"{'several' if hars else 'no'} other .har files"
        )
    with archive.open(hars[0]) as member:
        return json.load(member, object_hook=hook)


def _attached_name(name: str) -> str:
    """A ``_file`` name, refused unless it is a plain file name (a HAR must not make the proxy
    read files elsewhere)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"the attached file name {name!r} is not a plain file name")
    return name


def _beside(path: str) -> Attachments:
    folder = os.path.dirname(os.path.abspath(path))

    def read(name: str) -> bytes:
        try:
            with open(os.path.join(folder, _attached_name(name)), "rb") as f:
                return f.read()
        except OSError as e:
            raise ValueError(f"cannot read its attached file {name!r}: {e.strerror or e}") from e

    return read


def _in_archive(archive: zipfile.ZipFile) -> Attachments:
    def read(name: str) -> bytes:
        try:
            return archive.read(_attached_name(name))
        except KeyError:
            raise ValueError(f"its attached file {name!r} is not in the archive") from None
        except (OSError, zipfile.BadZipFile) as e:
            raise ValueError(f"cannot read its attached file {name!r}: {e}") from e

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
    request = entry.get("request")
    raw_url = request.get("url") if isinstance(request, dict) else None
    if not isinstance(raw_url, str):
        raise ValueError(f"{where}: no request.url")
    url = entry_url(raw_url)
    if url is None:
        raise ValueError(f"{where}: request.url {raw_url!r} is not a ws(s) or http(s) URL")
    messages = entry.get("_webSocketMessages", [])
    response = entry.get("response")
    content = response.get("content") if isinstance(response, dict) else None
    if "_webSocketMessages" not in entry and isinstance(content, dict) and "_file" in content:
        messages = _attached_messages(attachments, content["_file"], where)
    if not isinstance(messages, list):
        raise ValueError(f"{where}: _webSocketMessages is not a list")
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
            raise ValueError(f"{where}: message {i} has type {kind!r}, not 'send' or 'receive'")
        if not isinstance(payload, str):
            raise ValueError(f"{where}: message {i} data is not a string")
        if opcode == 1:
            data[i] = payload
        elif opcode == 2:
            try:
                data[i] = b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(
                    f"{where}: message {i} (opcode 2, binary) data is not base64: {payload!r:.60}"
                ) from None
        else:
            raise ValueError(
                f"{where}: message {i} has opcode {opcode!r}; only 1 (text) and 2 (binary) "
                "are messages"
            )
        if isinstance(t, int | float) and not isinstance(t, bool):
            times[i] = t
    if n and max(times[0], times[-1]) > _MS_THRESHOLD:
        times = array("d", (t / 1000 for t in times))
    return Conversation(
        url,
        index,
        sent,
        times,
        data,
        close=_close(entry.get("_webSocketClose"), where),
        started=_started(entry.get("startedDateTime")),
        protocol=_protocol(entry),
    )


def _attached_messages(attachments: Attachments, name: Any, where: str) -> list[Any]:
    """An entry's messages from its attached file: one JSON message per line."""
    try:
        lines = attachments(str(name)).decode("utf-8-sig").splitlines()
    except ValueError as e:  # UnicodeDecodeError too
        raise ValueError(f"{where}: {e}") from e
    messages = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                messages.append(json.loads(line, object_hook=_compact_message))
            except ValueError as e:
                raise ValueError(f"{where}: {name}, line {number}: invalid JSON: {e}") from e
    return messages


def _close(raw: Any, where: str) -> HarClose | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: _webSocketClose is not an object")
    code, reason, by, t = raw.get("code"), raw.get("reason"), raw.get("by"), raw.get("time")
    if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
        raise ValueError(f"{where}: _webSocketClose code {code!r} is not an integer")
    if reason is not None and not isinstance(reason, str):
        raise ValueError(f"{where}: _webSocketClose reason {reason!r} is not a string")
    if by not in ("client", "server"):
        raise ValueError(f"{where}: _webSocketClose by {by!r} is not 'client' or 'server'")
    time = float(t) if isinstance(t, int | float) and not isinstance(t, bool) else None
    if time is not None and time > _MS_THRESHOLD:
        time /= 1000
    return HarClose(code, reason, by, time)


def _started(raw: Any) -> float | None:
    if not isinstance(raw, str):
        return None
    try:
        return datetime.datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _protocol(entry: dict[str, Any]) -> str | None:
    response = entry.get("response")
    headers = response.get("headers") if isinstance(response, dict) else None
    for h in headers if isinstance(headers, list) else ():
        if isinstance(h, dict) and str(h.get("name", "")).lower() == "sec-websocket-protocol":
            value = h.get("value")
            return value.strip() if isinstance(value, str) else None
    return None


# --- replay --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """Something to do towards the client, `delay` seconds after the step before it (always 0
    unless timing is kept): send `message`, or, when `close` is set, close the client."""

    delay: float
    message: Message | None = None
    close: HarClose | None = None


@dataclass(slots=True)
class Replay:
    """The server's side of one recorded conversation, replayed turn by turn.

    The server messages recorded before the first client message are sent on open. Each message
    the client sends is matched to the next recorded client message with the same payload (text
    and binary never match each other), skipping recorded ones that were not sent; the server
    messages recorded after it, up to the next recorded client message, are the answer. A client
    message with no match gets no answer and changes nothing. So server messages go out in
    recorded order, each at most once. A recorded server close (or a dropped connection) comes
    after the server messages before it.

    Args:
        timing: keep the recorded gap before each server message (``"recorded"``), or send at
            once (``"none"``).
    """

    conversation: Conversation
    timing: Literal["none", "recorded"] = "none"
    #: Index of the next recorded client message that may match.
    position: int = 0
    #: Per payload, the indices of the recorded client messages with it, ascending.
    _index: dict[Message, list[int]] = field(default_factory=dict)
    _client: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The recorded client messages, and per payload where they are (built once, O(n)).
        sent, data = self.conversation.sent, self.conversation.data
        i = sent.find(1)
        while i != -1:
            self._client.append(i)
            self._index.setdefault(data[i], []).append(len(self._client) - 1)
            i = sent.find(1, i + 1)

    def open(self) -> list[Step]:
        """What to send when the socket opens."""
        end = self._client[0] if self._client else len(self.conversation)
        return self._steps(0, end, self.conversation.started)

    def receive(self, message: Message) -> list[Step] | None:
        """What to send for a message from the client; None when nothing recorded matches."""
        candidates = self._index.get(message)
        if not candidates:
            return None
        k = bisect.bisect_left(candidates, self.position)
        if k == len(candidates):
            return None
        n = candidates[k]
        self.position = n + 1
        start = self._client[n]
        end = self._client[n + 1] if n + 1 < len(self._client) else len(self.conversation)
        return self._steps(start + 1, end, self.conversation.times[start])

    @property
    def done(self) -> bool:
        """Every recorded client message was matched or skipped: nothing more will be sent."""
        return self.position >= len(self._client)

    def _steps(self, start: int, end: int, before: float | None) -> list[Step]:
        conversation = self.conversation
        timed = self.timing == "recorded"
        steps = []
        times, data = conversation.times, conversation.data
        for i in range(start, end):
            t = times[i]
            steps.append(Step(_gap(before, t) if timed else 0.0, data[i]))
            before = t
        close = conversation.close
        if end == len(conversation) and close is not None and close.by == "server":
            steps.append(Step(_gap(before, close.time) if timed else 0.0, close=close))
        return steps


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

    def message(self, sent: bool, data: Message, time: float) -> None:
        self.messages.append((sent, time, data))

    def closed(self, code: int | None, reason: str | None, by: Closer, time: float) -> bool:
        """Record the first close; False for later ones."""
        if self.close is not None:
            return False
        self.close = HarClose(code, reason, by, time)
        return True

    def entry(self) -> dict[str, Any]:
        """The HAR 1.2 entry, in Chrome's shape plus ``_webSocketClose``."""
        last = self.close.time if self.close and self.close.time else None
        if self.messages:
            last = max(last or 0.0, self.messages[-1][1])
        duration = round(1000 * (last - self.started), 3) if last else 0
        query = parse_url(self.url)
        response_headers = [{"name": "Upgrade", "value": "websocket"}]
        if self.protocol:
            response_headers.append({"name": "Sec-WebSocket-Protocol", "value": self.protocol})
        entry: dict[str, Any] = {
            "pageref": PAGE_ID,
            "startedDateTime": _iso(self.started),
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
                for sent, t, d in self.messages
            ],
        }
        if self.close is not None:
            c = self.close
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


def write_har(
    path: str, entries: Iterable[dict[str, Any]], started: float, pages: Iterable[Any] = ()
) -> None:
    """Write a HAR 1.2 file atomically: a temporary file in the same folder, then renamed over
    `path`, so that a reader (or a crash) never sees a torn file; on failure the old file stays.

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
    doc = {
        "log": {
            "version": "1.2",
            "creator": CREATOR,
            "pages": [*pages, page],
            "entries": list(entries),
        }
    }
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def kept_entries(path: str) -> tuple[list[Any], list[Any]]:
    """The pages and entries of the HAR at `path` that a recording starts from (none if there
    is no file).

    Raises:
        ValueError: the file exists but is not a HAR (a recording must not overwrite it).
    """
    if path.lower().endswith(".zip"):
        raise ValueError(
            f"{path}: recording into a .zip HAR is not supported; record into a .har path "
            "(the messages are written into it, which Chrome DevTools and replay both read)"
        )
    if not os.path.exists(path):
        return [], []
    with _parse(path, compact=False) as (doc, attachments):  # entries written back as they are
        read_har(doc, path, allow_empty=True, attachments=attachments)  # validates them
    pages = doc["log"].get("pages")
    return (pages if isinstance(pages, list) else []), doc["log"]["entries"]


def merge_entries(
    old: list[dict[str, Any]], recorded: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """`old` without the WebSocket entries for a URL that `recorded` has, then `recorded`."""
    urls = {e["request"]["url"] for e in recorded}
    kept = [
        e
        for e in old
        if not (
            isinstance(e, dict)
            and e.get("_resourceType") == "websocket"
            and entry_url(str(e.get("request", {}).get("url", ""))) in urls
        )
    ]
    return kept + recorded
