"""`route_from_har`: replay recorded WebSocket conversations as mocks, or record new ones.

Pure at import (neither mitmproxy nor asyncio; asyncio is imported when a timed replay first
waits), so that route scripts stay light. Built on the public `WebSocketRoute` API: a replay is
a mock route handler that answers with `har.Replay`; a recording is an intercept whose handlers
forward both directions unchanged and write down what the client saw, with a page-side
`on_close` that records and mirrors the close. The HAR file is rewritten (atomically, on a
thread of its own) each time a recorded socket ends, and by `flush_recordings()` when the proxy
stops.

`har_routes()` is the core, for any route table (the addon's ``wsroute_har`` options, the test
facade); `route_from_har()` is its form for route scripts.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, Protocol

from . import router
from .cassettes import (
    FILTER_HEADERS,
    BeforeRecordMessage,
    Filters,
    Match,
    Order,
    RecordMode,
    check_record_mode,
    closest,
    matcher,
    resolve_mode,
)
from .har import (
    MAX_ATTACHED_SIZE,
    MAX_SIZE,
    Conversation,
    Har,
    Message,
    ProtocolMatch,
    Recording,
    RecordingFile,
    Replay,
    Step,
    exact,
    load_har,
)
from .router import Route
from .urlmatch import URLMatch, compile_url_match

if TYPE_CHECKING:
    from .route import WebSocketRoute

__all__ = [
    "MAX_ATTACHED_SIZE",
    "MAX_SIZE",
    "Cassette",
    "HarRecorder",
    "UnmatchedMessageError",
    "flush_recordings",
    "har_routes",
    "route_from_har",
]

logger = logging.getLogger(__name__)

NotFound = Literal["abort", "fallback"]
Timing = Literal["none", "recorded"]

#: Told of every client message a replay has no recorded match for (the test facade lists them
#: on the socket's record); the replay sends no reply to such a message.
on_unmatched: Callable[[WebSocketRoute, str | bytes], None] | None = None


def route_from_har(
    har: str | os.PathLike[str],
    *,
    url: URLMatch | None = None,
    not_found: NotFound = "abort",
    update: bool = False,
    timing: Timing = "none",
    record_mode: RecordMode | None = None,
    match: Match = "exact",
    order: Order = "sequential",
    allow_playback_repeats: bool = False,
    filter_headers: Iterable[str] = FILTER_HEADERS,
    filter_query: Iterable[str] = (),
    before_record_message: BeforeRecordMessage | None = None,
    max_size: int = MAX_SIZE,
    max_attached_size: int = MAX_ATTACHED_SIZE,
) -> None:
    """Serve the WebSockets whose URL matches `url` from the conversations recorded in the HAR
    file `har` (Playwright's ``page.route_from_har`` names, for WebSockets), or record them
    into it. Call it from a route script. Its route is registered like `route_web_socket`'s:
    a later one wins.

    Args:
        har: a HAR 1.2 file with WebSocket entries (``_resourceType: "websocket"`` and
            ``_webSocketMessages``), as Chrome DevTools, Playwright's ``record_har_path``,
            mitmproxy's ``hardump`` and this project (``update=True``) write.
        url: a glob, `re.Pattern` or predicate, as for `route_web_socket`; None for any URL.
        not_found: for a matching socket whose URL has no entry: ``"abort"`` answers its
            upgrade with 404; ``"fallback"`` lets the next route have it (else it passes
            through).
        update: record instead of replaying (``record_mode="all"``): matching sockets connect
            to their server, and their conversations, as the client saw them, are written to
            `har` each time a socket ends and when the proxy stops. The entries the file had
            before this process recorded into it are replaced for each URL recorded, the
            others kept; everything recorded into it by this process is kept (see
            `HarRecorder`).
        timing: ``"recorded"`` keeps the recorded gap before each server message;
            ``"none"`` (the default) sends at once.
        record_mode: vcrpy's: ``"none"`` replays only, and a client message that matches
            nothing recorded is a handler error naming the closest recorded ones; ``"once"``
            records when `har` does not exist, else replays as ``"none"``; ``"new_episodes"``
            replays what matches, connects upstream for the rest and records it into the
            same entry (a socket without an entry is recorded whole); ``"all"`` records.
            None: ``"all"`` with ``update=True``, else ``"none"``. The ``wsroute_record_mode``
            option wins over it.
        match: how a client message matches a recorded one: ``"exact"``, ``"json"``,
            ``"json_subset"``, ``"socket.io"`` (by event, with the client's ack ids),
            ``"graphql"`` (by operation, with the client's ids), a compiled regex, or
            ``(recorded, actual) -> bool`` (see `cassettes.matcher`).
        order: ``"sequential"``: the next recorded client message that matches (skipping
            others); ``"any"``: any not played yet.
        allow_playback_repeats: a recorded client message (and its answer) may play again.
        filter_headers, filter_query: request header and query parameter names whose values
            are written, and matched, as ``"FILTERED"``.
        before_record_message: ``(direction, message) -> message | None``: what is written
            (None: nothing), and what a live message is matched as; ``direction`` is
            ``"send"`` (from the client) or ``"receive"``.
        max_size: the largest HAR read, in bytes (the ``.har``, or the ``.har`` in a ``.zip``,
            uncompressed), checked before it is read; default 1 GiB, 0 for no limit.
        max_attached_size: the most bytes its attached message files (Playwright's ``.jsonl``)
            may hold together, uncompressed; default 1 GiB, 0 for no limit.

    Raises:
        ValueError: `har` is not such a HAR file (the message names the file, the entry and
            what is wrong), does not exist when it is replayed, or an argument is invalid.
        RuntimeError: called outside a route script.
    """
    collector = router.script_collector("route_from_har")
    frame = sys._getframe(1)
    cassette = Cassette(
        har,
        url=url,
        not_found=not_found,
        update=update,
        timing=timing,
        record_mode=record_mode,
        match=match,
        order=order,
        allow_playback_repeats=allow_playback_repeats,
        filter_headers=filter_headers,
        filter_query=filter_query,
        before_record_message=before_record_message,
        max_size=max_size,
        max_attached_size=max_attached_size,
        base_url=collector.base_url,
        origin=f"{frame.f_code.co_filename}:{frame.f_lineno}",
        record_mode_override=collector.record_mode,
    )
    collector.routes.extend(cassette.routes)


def har_routes(har: str | os.PathLike[str], **options: Any) -> list[Route]:
    """The routes `route_from_har` registers, for any route table (register them in order; the
    list is one route today). Arguments as for `Cassette`.

    Raises:
        ValueError: as `route_from_har`.
    """
    return Cassette(har, **options).routes


def flush_recordings() -> None:
    """Write the file of every recording in progress (sockets still open included), and wait
    until they are written."""
    with _writers_lock:
        writers = list(_writers.values())
    tickets = [(writer, writer.write_soon(None)) for writer in writers]
    for writer, ticket in tickets:
        writer.wait(ticket)


def _any(url: str) -> bool:
    return True


class UnmatchedMessageError(Exception):
    """A replayed client message matched nothing recorded (``record_mode="none"``)."""


#: The query parameter Engine.IO clients set to a timestamp (``match="socket.io"`` filters it).
ENGINE_IO_TIMESTAMP = "t"


class Server(Protocol):
    """The server side of a `new_episodes` socket (`mitm_wsroute.upstream.Upstream`)."""

    @property
    def opened(self) -> Awaitable[None] | None:
        """Done once it is open (None: at once); fails if it cannot be reached."""

    def send(self, message: Message) -> None: ...
    def close(self, code: int | None, reason: str | None) -> None: ...


#: Makes a `Server` for a socket: `(ws, on_message, on_close)`.
Connect = Callable[
    ["WebSocketRoute", Callable[[Message], None], Callable[[int | None, str | None], None]],
    Server,
]


def _connect_upstream(
    ws: WebSocketRoute,
    on_message: Callable[[Message], None],
    on_close: Callable[[int | None, str | None], None],
) -> Server:
    from .upstream import Upstream  # here: it imports asyncio and python-websockets

    return Upstream(ws, on_message, on_close)


class Cassette:
    """One `route_from_har` call: its `routes`, and what they played.

    Arguments as for `route_from_har`, and: `base_url` resolves relative globs, `origin`
    (``file:line``) names the route in the log, `record_mode_override` (the
    ``wsroute_record_mode`` option, the pytest flag) wins over `record_mode` and `update`.

    When it records, a `HarRecorder` writes the file; `flush_recordings()` writes every
    recorded file and waits for it (the addon calls it when the proxy stops), `close()` this
    one's.

    Raises:
        ValueError: as `route_from_har`.
    """

    #: How a `new_episodes` socket reaches its server (the tests put a fake here).
    connect: Connect = staticmethod(_connect_upstream)

    def __init__(
        self,
        har: str | os.PathLike[str],
        *,
        url: URLMatch | None = None,
        not_found: NotFound = "abort",
        update: bool = False,
        timing: Timing = "none",
        record_mode: RecordMode | None = None,
        match: Match = "exact",
        order: Order = "sequential",
        allow_playback_repeats: bool = False,
        filter_headers: Iterable[str] = FILTER_HEADERS,
        filter_query: Iterable[str] = (),
        before_record_message: BeforeRecordMessage | None = None,
        max_size: int = MAX_SIZE,
        max_attached_size: int = MAX_ATTACHED_SIZE,
        base_url: str | None = None,
        origin: str | None = None,
        record_mode_override: RecordMode | None = None,
    ) -> None:
        for name, value, choices in (
            ("not_found", not_found, ("abort", "fallback")),
            ("timing", timing, ("none", "recorded")),
            ("order", order, ("sequential", "any")),
        ):
            if value not in choices:
                raise ValueError(f"{name} must be {' or '.join(map(repr, choices))}, not {value!r}")
        for name, limit in (("max_size", max_size), ("max_attached_size", max_attached_size)):
            if type(limit) is not int or limit < 0:
                raise ValueError(f"{name} must be 0 (no limit) or more bytes, not {limit!r}")
        if not isinstance(allow_playback_repeats, bool):
            raise ValueError(
                f"allow_playback_repeats must be True or False, not {allow_playback_repeats!r}"
            )
        check_record_mode(record_mode)
        check_record_mode(record_mode_override, "wsroute_record_mode")
        if match == "socket.io":  # Engine.IO clients put a timestamp in every URL
            filter_query = (*filter_query, ENGINE_IO_TIMESTAMP)
        self.filters = Filters.of(filter_headers, filter_query, before_record_message)
        self.match = matcher(match)
        self.order: Order = order
        self.repeats = allow_playback_repeats
        self.timing: Timing = timing
        self.path = path = os.path.abspath(os.fspath(har))
        exists = os.path.exists(path)
        #: What this call does: ``"none"`` (replay), ``"new_episodes"`` or ``"all"``.
        self.mode = resolve_mode(record_mode, update, record_mode_override, exists)
        self._matches = compile_url_match(url, base_url) if url is not None else _any
        label = f"har:{os.path.basename(path)}"
        origin = origin or path
        self.recorder: HarRecorder | None = None
        self.har: Har | None = None
        #: Per recorded conversation (by entry index), which of its messages were played.
        self.played: dict[int, bytearray] = {}
        self._served: dict[str, int] = {}  # sockets per URL so far: the n-th gets the n-th entry
        if self.mode == "none" and not exists:
            raise ValueError(
                f"{path}: no such HAR file to replay; record it first (record_mode='once' or "
                "'all', or update=True)"
            )
        if self.mode != "none":
            self.recorder = HarRecorder(
                path,
                filters=self.filters,
                episodes=self.mode == "new_episodes",
                max_size=max_size,
                max_attached_size=max_attached_size,
            )
        if self.mode == "all":
            assert self.recorder is not None
            handler, label = self.recorder.handler, f"{label} (recording)"
            self.routes = [Route(url or "**", self._matches, handler, origin, label)]
            return
        self.har = Har(path, {})
        if exists:
            self.har = self._filtered(
                load_har(
                    path,
                    allow_empty=self.mode == "new_episodes",
                    max_size=max_size,
                    max_attached_size=max_attached_size,
                )
            )
        if self.mode == "new_episodes":
            label = f"{label} (new episodes)"
        matches = self._matches
        if not_found == "fallback" and self.mode == "none":
            loaded = self.har

            def matches(u: str) -> bool:
                return self._matches(u) and bool(loaded.entries(self.filters.url(u)))

        self.routes = [Route(url or "**", matches, self._replay, origin, label)]

    def _filtered(self, har: Har) -> Har:
        """`har` by URL with the filtered query parameters filtered, as live URLs are (a file
        recorded without the filter, or by another tool, matches too)."""
        if not self.filters.query:
            return har
        by_url: dict[str, list[Conversation]] = {}
        for c in sorted((c for cs in har.by_url.values() for c in cs), key=lambda c: c.index):
            by_url.setdefault(self.filters.url(c.url), []).append(c)
        return Har(har.path, by_url)

    def unplayed(self) -> tuple[list[Message], list[Message]]:
        """The recorded client messages no client sent (that matched), and the recorded server
        messages never sent, of the entries whose URL this cassette routes, in file order."""
        client: list[Message] = []
        server: list[Message] = []
        conversations = self.har.by_url.values() if self.har is not None else ()
        for c in sorted((c for cs in conversations for c in cs), key=lambda c: c.index):
            if not self._matches(c.url):
                continue
            played = self.played.get(c.index) or bytearray(len(c))
            for i, (sent, _, data) in enumerate(c.messages()):
                if not played[i]:
                    (client if sent else server).append(data)
        return client, server

    def close(self) -> None:
        """Write what this cassette recorded (if anything) and wait for it; the next cassette
        of the same file reads it anew."""
        if self.recorder is not None:
            self.recorder.close()

    def _replay(self, ws: WebSocketRoute) -> None:
        assert self.har is not None
        url = self.filters.url(ws.url)
        entries = self.har.entries(url)
        n = self._served.get(url, 0)
        self._served[url] = n + 1
        if self.recorder is not None and n >= len(entries):
            self.recorder.handler(ws)  # new_episodes: a socket without an entry is recorded whole
            return
        if not entries:
            logger.warning(f"{ws.url}: no WebSocket entry in {self.path}; upgrade refused (404)")
            ws.reject(404, body=f"no WebSocket entry for {ws.url} in {self.path}\n")
            return
        conversation = entries[min(n, len(entries) - 1)]
        logger.info(
            f"{ws.url}: replaying entry {conversation.index} of {self.path} "
            f"({len(conversation)} messages)"
        )
        played = self.played.setdefault(conversation.index, bytearray(len(conversation)))
        player = Replay(
            conversation, self.timing, self.match, self.order, self.repeats, played=played
        )
        out = _Sender(ws, self.timing == "recorded", player)
        quiet = player.match.quiet if isinstance(player.match, ProtocolMatch) else None
        episode = None
        if self.recorder is not None:
            episode = _Episode(ws, player, self.recorder, self.connect)

        def on_message(message: str | bytes) -> Awaitable[None] | None:
            message = exact(message)
            key = self.filters.message("send", message)
            if key is None:
                return None  # skipped by before_record_message: never recorded, never matched
            steps = player.receive(key)
            if steps is not None:
                out.run(steps)
                return None
            if quiet is not None and quiet(key):  # a pong, a goodbye: nothing to answer
                if episode is not None and episode.server is not None:
                    episode.forward(message, key)  # (but it never connects the server)
                return None
            if episode is not None:
                return episode.forward(message, key)
            if on_unmatched is not None:
                on_unmatched(ws, message)
            raise UnmatchedMessageError(self._unmatched(ws.url, key, player))

        def on_close(code: int | None, reason: str | None) -> None:
            out.cancel()
            if episode is not None:
                episode.client_closed(code, reason)

        ws.on_message(on_message)
        ws.on_close(on_close)
        protocol = conversation.protocol
        if protocol and protocol in ws.protocols:
            if protocol != ws.protocols[0]:
                ws.accept(protocol=protocol)  # the subprotocol the recorded server chose
        out.run(player.open())

    def _unmatched(self, url: str, message: Message, player: Replay) -> str:
        near = closest(message, player.client_messages())
        shown = ", ".join(f"{m!r:.80}" for m in near) or "none (the entry has no client messages)"
        return (
            f"{url}: client message {message!r:.80} matches nothing recorded in entry "
            f"{player.conversation.index} of {self.path}; no reply (record_mode 'none'). "
            f"Closest recorded client messages: {shown}"
        )


class _Sender:
    """Carries out replay steps towards the client in order, waiting out their delays."""

    def __init__(self, ws: WebSocketRoute, timed: bool, player: Replay) -> None:
        self.ws = ws
        self.timed = timed
        self.player = player
        self.queue: deque[Step] = deque()
        self.task: Any = None  # the asyncio.Task that waits out delays, while one runs

    def run(self, steps: list[Step]) -> None:
        if not self.timed or (self.task is None and not any(s.delay for s in steps)):
            for step in steps:  # at once, no task (every delay is 0 without timing)
                self._do(step)
            return
        self.queue.extend(steps)
        if self.task is None:
            import asyncio  # here: route scripts import this module, and it stays light

            self.task = asyncio.get_running_loop().create_task(self._drain(asyncio.sleep))

    async def _drain(self, sleep: Callable[[float], Awaitable[None]]) -> None:
        try:
            while self.queue:
                step = self.queue.popleft()
                if step.delay:
                    await sleep(step.delay)
                self._do(step)
                await self.ws.drain()  # a client that reads slowly slows the replay down
        finally:
            self.task = None

    def cancel(self) -> None:
        self.queue.clear()
        if self.task is not None:
            self.task.cancel()

    def _do(self, step: Step) -> None:
        if step.close is None:
            assert step.message is not None
            self.ws.send(step.message)
            self.player.sent(step)
        else:
            _close(self.ws, step.close.code, step.close.reason)


class _Episode:
    """``record_mode="new_episodes"``: a replayed socket whose server is connected at the first
    client message that matches nothing recorded (`mitm_wsroute.upstream`; never, if every
    message matches). From then on unmatched client messages go to the server, the server's
    messages to the client, and both into a recording that grows the replayed entry, each
    after the recorded message the replay got to (`Replay.last`), with times on the entry's
    clock.
    """

    def __init__(
        self, ws: WebSocketRoute, player: Replay, recorder: HarRecorder, connect: Connect
    ) -> None:
        self.ws, self.player, self.recorder, self.connect = ws, player, recorder, connect
        self.recording = recorder.start(ws, base=player.conversation)
        self.server: Server | None = None
        self._mark = (-2, 0.0)  # (player.last, when it was reached)

    def _now(self) -> float:
        """Now, on the entry's clock: the time of the message the replay got to, plus the
        time since the replay got there."""
        last, now = self.player.last, time.time()
        if last != self._mark[0]:
            self._mark = (last, now)
        times = self.player.conversation.times
        base = times[last] if last >= 0 else (self.player.conversation.started or now)
        return base + (now - self._mark[1])

    def forward(self, message: Message, key: Message) -> Awaitable[None] | None:
        """An unmatched client message: to the server, and recorded as `key`. The first
        connects the server, and returns what the message handler waits for: the connection
        open, or the error (a handler error) if the server cannot be reached."""
        self.recording.message(True, key, self._now(), self.player.last)
        opened = None
        if self.server is None:
            self.server = self.connect(self.ws, self.from_server, self.server_closed)
            opened = self.server.opened
        self.server.send(message)
        return opened

    def from_server(self, message: str | bytes) -> None:
        key = self.recorder.filters.message("receive", exact(message))
        if key is not None:
            self.recording.message(False, key, self._now(), self.player.last)
        self.ws.send(message)

    def server_closed(self, code: int | None, reason: str | None) -> None:
        """The server closed, went away (1006) or could not be reached (1011): the client
        is closed alike."""
        if self.recording.closed(code, reason, "server", self._now()):
            self.recorder.writer.write_soon(self.recording)
        _close(self.ws, code, reason)

    def client_closed(self, code: int | None, reason: str | None) -> None:
        if self.server is None:
            return  # nothing new: the entry stays as it was
        first = self.ws._connection.first_close
        by_client = first is None or first[0]
        if by_client:
            self.server.close(code, reason)
        if self.recording.closed(code, reason, "client" if by_client else "server", self._now()):
            self.recorder.writer.write_soon(self.recording)


def _close(ws: WebSocketRoute, code: int | None, reason: str | None) -> None:
    """Close that side as recorded: a drop for 1006, an empty close frame for no code."""
    if code == 1006:
        ws.drop()
        return
    try:
        ws.close(code=code, reason=reason)
    except ValueError:  # a code that may not be sent (1005, 1015, ...): the nearest thing
        ws.close()


# --- recording -----------------------------------------------------------------------------------


class HarRecorder:
    """Records the conversations of the sockets its `handler` routes into one HAR file.

    Every recorder of one file in this process (``route_from_har(update=True)`` called twice,
    a route script reloaded during a recording, two URL filters on one file) shares one
    writer: the file is read once, when the first recorder of it starts, and each write holds
    every conversation recorded into it by any of them since then, in the order the sockets
    opened. Of the entries the file held at that start, those for a URL recorded since are
    dropped; the others are kept (a missing file is created).

    The file is rewritten atomically when a socket ends, on a thread of its own (the proxy
    does not wait for it; writes that pile up make one write), and by `flush()` and
    `flush_recordings()` (when the proxy stops), which wait for it. A write that fails is
    logged once per socket; the old file stays as it was and the proxy goes on.

    Args:
        max_size, max_attached_size: limits for reading the file, as for `load_har`.
        filters: what is written of the URL, the request headers and the messages.
        episodes: ``record_mode="new_episodes"``: the file's entries are kept, but those
            that recordings grow (`Recording.base`), which are replaced in place.

    Raises:
        ValueError: the file exists and is not a HAR (it is never overwritten).
    """

    def __init__(
        self,
        path: str,
        *,
        max_size: int = MAX_SIZE,
        max_attached_size: int = MAX_ATTACHED_SIZE,
        filters: Filters = Filters(),  # noqa: B008 - frozen
        episodes: bool = False,
    ) -> None:
        self.writer = _writer(path, max_size, max_attached_size, episodes)
        self.path = self.writer.path
        self.filters = filters
        #: The conversations this recorder recorded (the writer has every recorder's).
        self.recordings: list[Recording] = []

    def start(self, ws: WebSocketRoute, base: Conversation | None = None) -> Recording:
        """A new recording of `ws` (filtered URL and headers), written with the others."""
        fields = self.filters.header_fields(ws.request_headers.fields)
        recording = Recording(self.filters.url(ws.url), time.time(), fields, base=base)
        self.recordings.append(recording)
        self.writer.add(recording)
        return recording

    def handler(self, ws: WebSocketRoute) -> None:
        """The route handler: connect, forward both ways unchanged, record what passes."""
        server = ws.connect_to_server()
        recording = self.start(ws)
        now = time.time
        kept = self.filters.message

        def from_client(message: str | bytes) -> None:
            key = kept("send", exact(message))
            if key is not None:
                recording.message(True, key, now())
            server.send(message)

        def from_server(message: str | bytes) -> None:
            key = kept("receive", exact(message))
            if key is not None:
                recording.message(False, key, now())
            ws.send(message)

        def closed(code: int | None, reason: str | None) -> None:
            # Runs for the client's close, and after a server close mirrored to the client.
            first = ws._connection.first_close
            by_client = first is None or first[0]
            if recording.closed(code, reason, "client" if by_client else "server", now()):
                if by_client:
                    _close(server, code, reason)
                self.writer.write_soon(recording)

        ws.on_message(from_client)
        server.on_message(from_server)
        ws.on_close(closed)

    def flush(self, cause: Recording | None = None) -> bool:
        """Write the file now (with every recorder's conversations) and wait for it. Returns
        whether it was written."""
        return self.writer.flush(cause)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the writes asked for so far are done (at most `timeout` seconds).
        Returns whether the last one wrote the file (False too on a timeout)."""
        return self.writer.wait(self.writer.asked, timeout)

    def close(self) -> None:
        """Write the file if this recorder recorded anything, and wait for it; a recorder of
        the file made after this reads the file anew (when this was its only recorder)."""
        if any(r.state() != (0, None) for r in self.recordings):
            self.flush()
        with _writers_lock:
            if _writers.get(self.writer.path) is self.writer:
                del _writers[self.writer.path]


#: The writer of each file being recorded in this process, by real path.
_writers: dict[str, _Writer] = {}
_writers_lock = threading.Lock()


def _writer(path: str, max_size: int, max_attached_size: int, episodes: bool) -> _Writer:
    """The writer of `path`: the one recording into it with ``record_mode="all"``, else a new
    one, which reads the file as it is then (an earlier writer's recordings written first).
    New episodes always start anew: they grow the entries of the file as it was replayed.

    Raises:
        ValueError: as `HarRecorder`.
    """
    real = os.path.realpath(path)
    with _writers_lock:
        writer = _writers.get(real)
        if writer is not None and not episodes and writer.file.replace_urls:
            return writer
    if writer is not None:
        writer.flush()
    file = RecordingFile(
        real,
        time.time(),
        max_size=max_size,
        max_attached_size=max_attached_size,
        replace_urls=not episodes,
    )
    with _writers_lock:
        writer = _writers[real] = _Writer(file)
    return writer


class _Writer:
    """Writes one HAR file for all its recorders, on a thread that runs while there is
    something to write: at most one write at a time, and the writes asked for meanwhile
    become one write after it (of the recordings as they are then)."""

    def __init__(self, file: RecordingFile) -> None:
        self.file = file
        self.path = file.path
        self.recordings: list[Recording] = []
        #: Writes asked for, and those done (each write does all asked before it began).
        self.asked = 0
        self._done = 0
        self._ok = True  # the last write succeeded
        self._causes: list[Recording | None] = []  # of the writes asked since the last began
        self._failures_logged: set[int] = set()
        self._thread: threading.Thread | None = None
        self._condition = threading.Condition()

    def add(self, recording: Recording) -> None:
        with self._condition:
            self.recordings.append(recording)

    def write_soon(self, cause: Recording | None) -> int:
        """Ask for a write, because `cause` ended (None: at stop); it runs on the writer
        thread. Returns the write's number, for `wait`."""
        with self._condition:
            self.asked += 1
            self._causes.append(cause)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"HAR writer {self.path}", daemon=True
                )
                self._thread.start()
            return self.asked

    def wait(self, ticket: int, timeout: float | None = None) -> bool:
        """Wait until write `ticket` is done; whether the file was written then."""
        with self._condition:
            return self._condition.wait_for(lambda: self._done >= ticket, timeout) and self._ok

    def flush(self, cause: Recording | None = None) -> bool:
        """Write now and wait for it; whether the file was written."""
        return self.wait(self.write_soon(cause))

    def _run(self) -> None:
        ticket, ok = 0, False
        try:
            while True:
                with self._condition:
                    if ticket:
                        self._finished(ticket, ok)
                    if self._done >= self.asked:
                        self._thread = None
                        return
                    ticket, causes, self._causes = self.asked, self._causes, []
                    recordings = list(self.recordings)
                ok = self._write(recordings, causes)
        except BaseException:  # waiters are never left waiting; a later write starts anew
            with self._condition:
                self._finished(ticket, False)
                self._thread = None
            raise

    def _finished(self, ticket: int, ok: bool) -> None:
        """Write `ticket` is done (with the condition held)."""
        self._done, self._ok = max(self._done, ticket), ok
        self._condition.notify_all()

    def _write(self, recordings: list[Recording], causes: list[Recording | None]) -> bool:
        try:
            written = self.file.write(recordings)
        except Exception as e:  # OSError: permissions, disk full; anything else is a bug
            for cause in causes:
                if id(cause) not in self._failures_logged:
                    self._failures_logged.add(id(cause))
                    what = cause.url if cause is not None else "at stop"
                    logger.error(
                        f"cannot write the HAR recording {self.path} ({what}): {e}; "
                        "the file keeps its previous content"
                    )
            return False
        logger.info(f"HAR recording: wrote {written} WebSocket entries to {self.path}")
        return True
