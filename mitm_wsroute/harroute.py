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
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

from . import router
from .har import (
    MAX_ATTACHED_SIZE,
    MAX_SIZE,
    Har,
    Recording,
    RecordingFile,
    Replay,
    Step,
    exact,
    load_har,
)
from .router import Route, RouteHandler
from .urlmatch import URLMatch, compile_url_match

if TYPE_CHECKING:
    from .route import WebSocketRoute

__all__ = [
    "MAX_ATTACHED_SIZE",
    "MAX_SIZE",
    "HarRecorder",
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
    max_size: int = MAX_SIZE,
    max_attached_size: int = MAX_ATTACHED_SIZE,
) -> None:
    """Serve the WebSockets whose URL matches `url` from the conversations recorded in the HAR
    file `har` (Playwright's ``page.route_from_har`` names, for WebSockets). Call it from a
    route script. Its route is registered like `route_web_socket`'s: a later one wins.

    Args:
        har: a HAR 1.2 file with WebSocket entries (``_resourceType: "websocket"`` and
            ``_webSocketMessages``), as Chrome DevTools, Playwright's ``record_har_path``,
            mitmproxy's ``hardump`` and this project (``update=True``) write.
        url: a glob, `re.Pattern` or predicate, as for `route_web_socket`; None for any URL.
        not_found: for a matching socket whose URL has no entry: ``"abort"`` answers its
            upgrade with 404; ``"fallback"`` lets the next route have it (else it passes
            through).
        update: record instead of replaying: matching sockets connect to their server, and
            their conversations, as the client saw them, are written to `har` each time a
            socket ends and when the proxy stops. The entries the file had before this process
            recorded into it are replaced for each URL recorded, the others kept; everything
            recorded into it by this process is kept (see `HarRecorder`).
        timing: ``"recorded"`` keeps the recorded gap before each server message;
            ``"none"`` (the default) sends at once.
        max_size: the largest HAR read, in bytes (the ``.har``, or the ``.har`` in a ``.zip``,
            uncompressed), checked before it is read; default 1 GiB, 0 for no limit.
        max_attached_size: the most bytes its attached message files (Playwright's ``.jsonl``)
            may hold together, uncompressed; default 1 GiB, 0 for no limit.

    Raises:
        ValueError: `har` is not such a HAR file (the message names the file, the entry and
            what is wrong), or an argument is invalid.
        RuntimeError: called outside a route script.
    """
    collector = router.script_collector("route_from_har")
    frame = sys._getframe(1)
    origin = f"{frame.f_code.co_filename}:{frame.f_lineno}"
    routes = har_routes(
        har,
        url=url,
        not_found=not_found,
        update=update,
        timing=timing,
        max_size=max_size,
        max_attached_size=max_attached_size,
        base_url=collector.base_url,
        origin=origin,
    )
    collector.routes.extend(routes)


def har_routes(
    har: str | os.PathLike[str],
    *,
    url: URLMatch | None = None,
    not_found: NotFound = "abort",
    update: bool = False,
    timing: Timing = "none",
    max_size: int = MAX_SIZE,
    max_attached_size: int = MAX_ATTACHED_SIZE,
    base_url: str | None = None,
    origin: str | None = None,
) -> list[Route]:
    """The routes `route_from_har` registers, for any route table (register them in order; the
    list is one route today). Arguments as for `route_from_har`; `base_url` resolves relative
    globs, `origin` (``file:line``) names the route in the log.

    With ``update=True`` a `HarRecorder` writes the file; `flush_recordings()` writes every
    recorded file and waits for it (the addon calls it when the proxy stops).

    Raises:
        ValueError: as `route_from_har`.
    """
    if not_found not in ("abort", "fallback"):
        raise ValueError(f"not_found must be 'abort' or 'fallback', not {not_found!r}")
    if timing not in ("none", "recorded"):
        raise ValueError(f"timing must be 'none' or 'recorded', not {timing!r}")
    for name, limit in (("max_size", max_size), ("max_attached_size", max_attached_size)):
        if type(limit) is not int or limit < 0:
            raise ValueError(f"{name} must be 0 (no limit) or more bytes, not {limit!r}")
    path = os.path.abspath(os.fspath(har))
    matches = compile_url_match(url, base_url) if url is not None else _any
    label = f"har:{os.path.basename(path)}"
    origin = origin or path
    if update:
        recorder = HarRecorder(path, max_size=max_size, max_attached_size=max_attached_size)
        return [Route(url or "**", matches, recorder.handler, origin, f"{label} (recording)")]
    loaded = load_har(path, max_size=max_size, max_attached_size=max_attached_size)
    handler = _replay_handler(loaded, timing)
    if not_found == "fallback":
        inner = matches

        def matches(u: str) -> bool:
            return inner(u) and bool(loaded.entries(u))

    return [Route(url or "**", matches, handler, origin, label)]


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


# --- replay --------------------------------------------------------------------------------------


def _replay_handler(har: Har, timing: Timing) -> RouteHandler:
    served: dict[str, int] = {}  # sockets per URL so far: the n-th gets the n-th entry

    def replay(ws: WebSocketRoute) -> None:
        entries = har.entries(ws.url)
        if not entries:
            logger.warning(f"{ws.url}: no WebSocket entry in {har.path}; upgrade refused (404)")
            ws.reject(404, body=f"no WebSocket entry for {ws.url} in {har.path}\n")
            return
        n = served.get(ws.url, 0)
        served[ws.url] = n + 1
        conversation = entries[min(n, len(entries) - 1)]
        logger.info(
            f"{ws.url}: replaying entry {conversation.index} of {har.path} "
            f"({len(conversation)} messages)"
        )
        player = Replay(conversation, timing)
        out = _Sender(ws, timing == "recorded")

        def on_message(message: str | bytes) -> None:
            message = exact(message)
            steps = player.receive(message)
            if steps is None:
                logger.warning(
                    f"{ws.url}: client message {message!r:.80} matches nothing recorded in "
                    f"entry {conversation.index} of {har.path}; no reply"
                )
                if on_unmatched is not None:
                    on_unmatched(ws, message)
                return
            out.run(steps)

        ws.on_message(on_message)
        ws.on_close(lambda code, reason: out.cancel())
        protocol = conversation.protocol
        if protocol and protocol in ws.protocols and protocol != ws.protocols[0]:
            ws.accept(protocol=protocol)  # the subprotocol the recorded server chose
        out.run(player.open())

    return replay


class _Sender:
    """Carries out replay steps towards the client in order, waiting out their delays."""

    def __init__(self, ws: WebSocketRoute, timed: bool) -> None:
        self.ws = ws
        self.timed = timed
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
        else:
            _close(self.ws, step.close.code, step.close.reason)


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

    Raises:
        ValueError: the file exists and is not a HAR (it is never overwritten).
    """

    def __init__(
        self, path: str, *, max_size: int = MAX_SIZE, max_attached_size: int = MAX_ATTACHED_SIZE
    ) -> None:
        self.writer = _writer(path, max_size, max_attached_size)
        self.path = self.writer.path
        #: The conversations this recorder recorded (the writer has every recorder's).
        self.recordings: list[Recording] = []

    def handler(self, ws: WebSocketRoute) -> None:
        """The route handler: connect, forward both ways unchanged, record what passes."""
        server = ws.connect_to_server()
        recording = Recording(ws.url, time.time(), list(ws.request_headers.fields))
        self.recordings.append(recording)
        self.writer.add(recording)
        now = time.time

        def from_client(message: str | bytes) -> None:
            recording.message(True, message, now())
            server.send(message)

        def from_server(message: str | bytes) -> None:
            recording.message(False, message, now())
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


#: The writer of each file being recorded in this process, by real path.
_writers: dict[str, _Writer] = {}
_writers_lock = threading.Lock()


def _writer(path: str, max_size: int, max_attached_size: int) -> _Writer:
    """The writer of `path` (the file read when the first recorder of it starts)."""
    real = os.path.realpath(path)
    with _writers_lock:
        writer = _writers.get(real)
        if writer is None:
            file = RecordingFile(
                real, time.time(), max_size=max_size, max_attached_size=max_attached_size
            )
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
