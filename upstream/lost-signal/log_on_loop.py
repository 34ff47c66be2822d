"""The proposed change, as a mitmdump script: a log record emitted on the event loop's own
thread is scheduled with ``call_soon``, not ``call_soon_threadsafe``, so it does not write to
asyncio's self-pipe, which the loop shares with signal wake-ups. Records from other threads
still wake the loop. In mitmproxy itself this is a change to ``LegacyLogEvents.emit``
(``mitmproxy/log.py``) and ``CallbackLogger.emit`` (``mitmproxy/addons/eventstore.py``)."""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import log
from mitmproxy.hooks import Hook


def soon(loop: asyncio.AbstractEventLoop, hook: Hook, call: object) -> None:
    try:
        on_loop = asyncio.get_running_loop() is loop
    except RuntimeError:
        on_loop = False
    (loop.call_soon if on_loop else loop.call_soon_threadsafe)(call, hook)  # type: ignore[arg-type]


def emit(self: log.LegacyLogEvents, record: logging.LogRecord) -> None:
    entry = log.LogEntry(
        msg=self.format(record),
        level=log.LOGGING_LEVELS_TO_LOGENTRY.get(record.levelno, "error"),
    )
    soon(self.master.event_loop, log.AddLogHook(entry), self.master.addons.trigger)


log.LegacyLogEvents.emit = emit  # type: ignore[method-assign]
