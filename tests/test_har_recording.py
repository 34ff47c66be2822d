"""Recording into a HAR file from several recorders, off the calling thread, atomically."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from mitm_wsroute import har
from mitm_wsroute.connection import PAGE, SERVER, RoutedConnection
from mitm_wsroute.har import load_har
from mitm_wsroute.harroute import HarRecorder, flush_recordings, har_routes
from tests.test_har import entry, msg
from tests.test_harroute import recorder, route_socket, run, write


def talk(handler: Any, url: str, *messages: str) -> RoutedConnection:
    """A socket through `handler` that gets `messages` from its server and stays open."""
    c, _ = route_socket(handler, url)
    for m in messages:
        c.receive_message(SERVER, m)
    run(c)
    return c


def end(c: RoutedConnection) -> None:
    c.receive_close(SERVER, 1000, "")
    run(c)


def recorded(path: Path, url: str = "wss://h/ws") -> list[list[str | bytes]]:
    return [c.data for c in load_har(str(path)).entries(url)]


def test_two_recorders_of_one_file_both_keep_their_entries(tmp_path: Path) -> None:
    path = tmp_path / "rec.har"
    os.symlink(path.name, tmp_path / "link.har")  # another name for the same file
    one, two = HarRecorder(str(path)), HarRecorder(str(tmp_path / "link.har"))
    a = talk(one.handler, "wss://h/ws", "one")
    b = talk(two.handler, "wss://h/ws", "two")
    c = talk(two.handler, "wss://h/other", "three")
    for socket in (b, a, c):
        end(socket)
    assert one.wait(10) and two.wait(10)
    assert recorded(path) == [["one"], ["two"]]  # in the order the sockets opened
    assert recorded(path, "wss://h/other") == [["three"]]
    assert (tmp_path / "link.har").is_symlink()  # the link is kept, the file it names written


def test_a_reloaded_route_keeps_what_the_old_one_recorded(tmp_path: Path) -> None:
    """A route script reloaded mid-recording makes a new recorder of the same file, while the
    old one's sockets live on."""
    path = tmp_path / "rec.har"
    [old] = har_routes(path, update=True)
    first = talk(old.handler, "wss://h/ws", "before the reload")
    second = talk(old.handler, "wss://h/ws", "ended before the reload")
    end(second)
    assert recorder(old).wait(10)
    assert recorded(path) == [["before the reload"], ["ended before the reload"]]

    [new] = har_routes(path, update=True)  # the file now holds the old route's entries
    third = talk(new.handler, "wss://h/ws", "after the reload")
    end(third)
    end(first)  # the old route's socket ends last
    flush_recordings()
    assert recorded(path) == [
        ["before the reload"],
        ["ended before the reload"],
        ["after the reload"],
    ]


def test_only_entries_from_before_the_recording_are_replaced(tmp_path: Path) -> None:
    path = Path(write(tmp_path / "rec.har", entry("wss://h/ws", [msg("receive", "old")]),
                      entry("wss://h/other", [msg("receive", "kept")])))  # fmt: skip
    one, two = HarRecorder(str(path)), HarRecorder(str(path))
    end(talk(one.handler, "wss://h/ws", "new 1"))
    end(talk(two.handler, "wss://h/ws", "new 2"))
    end(talk(one.handler, "wss://h/ws", "new 3"))
    flush_recordings()
    assert recorded(path) == [["new 1"], ["new 2"], ["new 3"]]
    assert recorded(path, "wss://h/other") == [["kept"]]


class BlockedWrites:
    """Stands in for `har.write_har`: each write waits until released, and is counted with
    the thread it ran on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = har.write_har
        self.started = threading.Event()
        self.release = threading.Event()
        self.threads: list[int] = []
        monkeypatch.setattr(har, "write_har", self)

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.threads.append(threading.get_ident())
        self.started.set()
        assert self.release.wait(10), "the test never released the write"
        self.real(*args, **kwargs)


def test_a_socket_end_does_not_wait_for_the_write_nor_serialise_on_its_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = [msg("receive", f"message {i}") for i in range(100_000)]
    path = Path(write(tmp_path / "rec.har", entry("wss://h/big", big)))
    encoded_on: set[int] = set()
    encode_entry = har.encode_entry

    def spy(e: dict[str, Any]) -> str:
        encoded_on.add(threading.get_ident())
        return encode_entry(e)

    monkeypatch.setattr(har, "encode_entry", spy)
    writes = BlockedWrites(monkeypatch)
    rec = HarRecorder(str(path))
    c = talk(rec.handler, "wss://h/ws", "hello")
    end(c)  # returns while the write is blocked: the close path does not wait for it
    assert writes.started.wait(10)
    assert recorded(path) == []  # not written yet
    writes.release.set()
    assert rec.wait(10)
    assert recorded(path) == [["hello"]]
    assert len(recorded(path, "wss://h/big")[0]) == 100_000
    me = threading.get_ident()
    assert encoded_on and me not in encoded_on  # the big entry was encoded on the writer
    assert writes.threads and me not in writes.threads


def test_writes_asked_for_during_a_write_become_one_write_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rec.har"
    writes = BlockedWrites(monkeypatch)
    rec = HarRecorder(str(path))
    end(talk(rec.handler, "wss://h/ws", "0"))
    assert writes.started.wait(10)  # the first write is in flight, blocked
    for n in range(1, 4):
        end(talk(rec.handler, "wss://h/ws", str(n)))
    writes.release.set()
    assert rec.wait(10)
    assert len(writes.threads) == 2  # the three later ends: one write, after the first
    assert recorded(path) == [["0"], ["1"], ["2"], ["3"]]


def test_flush_at_stop_waits_for_the_writer_and_writes_open_sockets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rec.har"
    writes = BlockedWrites(monkeypatch)
    rec = HarRecorder(str(path))
    end(talk(rec.handler, "wss://h/ws", "ended"))
    talk(rec.handler, "wss://h/ws", "still open")
    assert writes.started.wait(10)  # a write is in flight, blocked
    asked = threading.Event()
    write_soon = rec.writer.write_soon

    def ask(cause: Any) -> int:
        ticket = write_soon(cause)
        asked.set()
        return ticket

    monkeypatch.setattr(rec.writer, "write_soon", ask)
    stopping = threading.Thread(target=flush_recordings)
    stopping.start()
    assert asked.wait(10)
    assert stopping.is_alive()  # waiting for the writer
    writes.release.set()
    stopping.join(10)
    assert not stopping.is_alive()
    assert recorded(path) == [["ended"], ["still open"]]


def test_writes_are_a_synced_temporary_file_renamed_over_the_har(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rec.har"
    calls: list[tuple[str, Any]] = []
    fsync, replace = os.fsync, os.replace

    def spy_fsync(fd: int) -> None:
        calls.append(("fsync", fd))
        fsync(fd)

    def spy_replace(src: str, dst: str) -> None:
        calls.append(("replace", (src, dst)))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    rec = HarRecorder(str(path))
    end(talk(rec.handler, "wss://h/ws", "hello"))
    assert rec.wait(10)
    assert [name for name, _ in calls] == ["fsync", "replace"]
    tmp, target = calls[1][1]
    assert target == str(path)
    assert os.path.dirname(tmp) == str(tmp_path)  # the same folder: the rename is atomic
    assert os.path.basename(tmp).startswith(".rec.har.")


def test_a_failing_write_leaves_the_previous_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rec.har"
    rec = HarRecorder(str(path))
    end(talk(rec.handler, "wss://h/ws", "first"))
    assert rec.wait(10)
    before = path.read_bytes()

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # fails after the temporary file was written
    with caplog.at_level(logging.ERROR):
        end(talk(rec.handler, "wss://h/ws", "second"))
        assert not rec.wait(10)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.har"]  # no temporary file
    assert "No space left on device" in caplog.text
    monkeypatch.undo()
    assert rec.flush()  # the next write has both
    assert recorded(path) == [["first"], ["second"]]
    json.loads(path.read_text())  # one complete document


def test_recorded_binary_from_a_bytes_like_message_is_bytes(tmp_path: Path) -> None:
    path = tmp_path / "rec.har"
    rec = HarRecorder(str(path))
    c, _ = route_socket(rec.handler)
    c.receive_message(PAGE, bytearray(b"\x01\x02"))  # type: ignore[arg-type]  # handlers may
    c.receive_message(PAGE, memoryview(b"\x03"))  # type: ignore[arg-type]  # get bytes-likes
    run(c)
    end(c)
    assert [type(d) for _, _, d in rec.recordings[0].messages] == [bytes, bytes]
    assert rec.wait(10)
    [conversation] = load_har(str(path)).entries("wss://h/ws")
    assert conversation.data == [b"\x01\x02", b"\x03"]
    assert [type(d) for d in conversation.data] == [bytes, bytes]
