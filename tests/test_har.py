"""HAR reading, the replay matcher and writing (har.py), as data in and data out."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mitm_wsroute.har import (
    CREATOR,
    Conversation,
    HarClose,
    Recording,
    Replay,
    Step,
    entry_url,
    kept_entries,
    load_har,
    merge_entries,
    read_har,
    write_har,
)

T0 = 1_764_390_000.0


def entry(url: str = "wss://h/ws", messages: Any = (), **extra: Any) -> dict[str, Any]:
    return {
        "startedDateTime": "2025-11-29T04:20:00.000Z",
        "request": {"method": "GET", "url": url},
        "response": {"status": 101},
        "_resourceType": "websocket",
        "_webSocketMessages": list(messages),
        **extra,
    }


def msg(kind: str, data: str, opcode: int = 1, time: float = T0) -> dict[str, Any]:
    return {"type": kind, "time": time, "opcode": opcode, "data": data}


def attached(name: str, url: str = "wss://h/ws") -> dict[str, Any]:
    """An entry whose messages are in an attached file, as Playwright writes them."""
    return {
        "_resourceType": "websocket",
        "request": {"url": url},
        "response": {"status": 101, "content": {"size": -1, "_file": name}},
    }


def jsonl(*messages: dict[str, Any]) -> bytes:
    return "".join(json.dumps(m) + "\n" for m in messages).encode()


def har(*entries: Any) -> dict[str, Any]:
    return {"log": {"version": "1.2", "creator": CREATOR, "entries": list(entries)}}


def conversation(*messages: tuple[bool, str | bytes], close: HarClose | None = None) -> Any:
    doc = har(
        entry(
            messages=[
                msg("send" if sent else "receive", d)
                if isinstance(d, str)
                else msg("send" if sent else "receive", base64.b64encode(d).decode(), 2)
                for sent, d in messages
            ]
        )
    )
    c = read_har(doc).entries("wss://h/ws")[0]
    c.close = close
    return c


def texts(steps: list[Step] | None) -> list[Any] | None:
    if steps is None:
        return None
    return [s.message if s.close is None else ("close", s.close.code) for s in steps]


# --- reading -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("wss://H.example:443/ws?x=1#frag", "wss://h.example/ws?x=1"),
        ("https://h.example/ws", "wss://h.example/ws"),  # mitmproxy writes http(s)
        ("http://h.example:8080", "ws://h.example:8080/"),
        ("ws://127.0.0.1:9/a b", "ws://127.0.0.1:9/a%20b"),
        ("ftp://h/x", None),
        ("not a url", None),
    ],
)
def test_entry_urls_are_normalised_ws_urls(raw: str, url: str | None) -> None:
    assert entry_url(raw) == url


def test_reads_chrome_shaped_entries_text_and_binary_skipping_http() -> None:
    doc = har(
        {"request": {"url": "https://h/index.html"}, "response": {}},  # HTTP: ignored
        entry(
            "https://h/ws",
            [msg("receive", "hi"), msg("send", base64.b64encode(b"\x00\xff").decode(), 2)],
            _webSocketClose={"code": 4000, "reason": "bye", "by": "server", "time": T0 + 1},
        ),
        entry("wss://h/ws", [msg("receive", "second", time=(T0 + 2) * 1000)]),
    )
    loaded = read_har(doc, "x.har")
    first, second = loaded.entries("wss://h/ws")
    assert list(first.messages()) == [(False, T0, "hi"), (True, T0, b"\x00\xff")]
    assert first.close == HarClose(4000, "bye", "server", T0 + 1)
    assert (first.index, second.index) == (1, 2)
    assert list(second.messages()) == [(False, T0 + 2, "second")]  # milliseconds scaled
    assert loaded.entries("wss://h/other") == []


def test_recorded_subprotocol_is_read() -> None:
    doc = har(entry(response={"headers": [{"name": "sec-websocket-protocol", "value": "chat.v2"}]}))
    assert read_har(doc).entries("wss://h/ws")[0].protocol == "chat.v2"


BAD = [
    (b"{not json", "invalid JSON"),
    (b"\xff\xfe", "invalid JSON"),
    (json.dumps([1, 2]).encode(), "not a HAR file (no log.entries list)"),
    (json.dumps({"log": {"entries": {}}}).encode(), "not a HAR file"),
    (json.dumps(har({"request": {"url": "https://h/"}})).encode(), "no WebSocket entries"),
    (json.dumps(har(entry(messages=[msg("send", "!!", 2)]))).encode(),
     "entry 0: message 0 (opcode 2, binary) data is not base64"),
    (json.dumps(har(entry(), entry(messages=[msg("send", "x", 9)]))).encode(),
     "entry 1: message 0 has opcode 9; only 1 (text) and 2 (binary)"),
    (json.dumps(har(entry(messages=[msg("sent", "x")]))).encode(),
     "entry 0: message 0 has type 'sent', not 'send' or 'receive'"),
    (json.dumps(har(entry(messages=[{"type": "send"}]))).encode(),
     "entry 0: message 0 is not {type, time, opcode, data}"),
    (json.dumps(har(entry(messages=[msg("send", 5)]))).encode(),  # type: ignore[arg-type]
     "entry 0: message 0 data is not a string"),
    (json.dumps(har(entry(_webSocketMessages={}))).encode(),
     "entry 0: _webSocketMessages is not a list"),
    (json.dumps(har(attached("abc.jsonl"))).encode(),
     "entry 0: cannot read its attached file 'abc.jsonl'"),
    (json.dumps(har(attached("../abc.jsonl"))).encode(),
     "entry 0: the attached file name '../abc.jsonl' is not a plain file name"),
    (json.dumps(har(entry(url="ftp://h/"))).encode(), "entry 0: request.url 'ftp://h/' is not"),
    (json.dumps(har({"_resourceType": "websocket"})).encode(), "entry 0: no request.url"),
    (json.dumps(har(entry(_webSocketClose={"code": "x", "by": "server"}))).encode(),
     "entry 0: _webSocketClose code 'x' is not a close code"),
    (json.dumps(har(entry(_webSocketClose={"code": 1000, "by": "nobody"}))).encode(),
     "entry 0: _webSocketClose by 'nobody'"),
]  # fmt: skip


@pytest.mark.parametrize(("content", "what"), BAD)
def test_bad_input_names_the_file_the_entry_and_what_is_wrong(
    tmp_path: Path, content: bytes, what: str
) -> None:
    path = tmp_path / "bad.har"
    path.write_bytes(content)
    with pytest.raises(ValueError) as e:
        load_har(str(path))
    assert str(e.value).startswith(f"{path}: ")
    assert what in str(e.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the HAR file"):
        load_har(str(tmp_path / "nope.har"))


ATTACHED = [msg("receive", "hi", time=T0 * 1000), msg("send", "AP8=", 2, time=T0 * 1000 + 500)]


def test_messages_in_a_playwright_zip_are_read(tmp_path: Path) -> None:
    path = tmp_path / "rec.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("har.har", json.dumps(har(attached("a1.jsonl"), entry(url="wss://h/inline"))))
        z.writestr("a1.jsonl", jsonl(*ATTACHED))
    loaded = load_har(str(path))
    (first,) = loaded.entries("wss://h/ws")
    assert list(first.messages()) == [(False, T0, "hi"), (True, T0 + 0.5, b"\x00\xff")]
    assert len(loaded.entries("wss://h/inline")) == 1


def test_messages_attached_beside_a_har_are_read(tmp_path: Path) -> None:
    (tmp_path / "a1.jsonl").write_bytes(jsonl(*ATTACHED) + b"\n")  # blank lines are nothing
    path = tmp_path / "rec.har"
    path.write_text(json.dumps(har(attached("a1.jsonl"))))
    (first,) = load_har(str(path)).entries("wss://h/ws")
    assert list(first.messages()) == [(False, T0, "hi"), (True, T0 + 0.5, b"\x00\xff")]
    assert kept_entries(str(path))[1] == [attached("a1.jsonl")]  # a recording keeps it as is


@pytest.mark.parametrize(
    ("members", "what"),
    [
        ({"notes.txt": b""}, "not a HAR archive: it holds no har.har (Playwright's name) and no"),
        ({"a.har": b"{}", "b.har": b"{}"}, "and several other .har files"),
        ({"har.har": json.dumps(har(attached("gone.jsonl"))).encode()},
         "entry 0: its attached file 'gone.jsonl' is not in the archive"),
        ({"har.har": json.dumps(har(attached("a.jsonl"))).encode(), "a.jsonl": b"{oops\n"},
         "entry 0: a.jsonl, line 1: invalid JSON"),
        ({"har.har": json.dumps(har(attached("a.jsonl"))).encode(),
          "a.jsonl": jsonl(msg("send", "x", 9))},
         "entry 0: message 0 has opcode 9"),
    ],
)  # fmt: skip
def test_bad_archive_names_the_file_and_what_is_wrong(
    tmp_path: Path, members: dict[str, bytes], what: str
) -> None:
    path = tmp_path / "rec.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(ValueError) as e:
        load_har(str(path))
    assert str(e.value).startswith(f"{path}: ")
    assert what in str(e.value)


def test_a_parsed_har_has_no_folder_for_attached_messages() -> None:
    with pytest.raises(ValueError, match="entry 0: the messages are in an attached file"):
        read_har(har(attached("a1.jsonl")), "x.har")


def test_a_zip_that_is_not_one_and_recording_into_a_zip_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "rec.zip"
    path.write_text(json.dumps(har(entry())))
    with pytest.raises(ValueError, match=r"not a HAR archive, invalid \.zip"):
        load_har(str(path))
    with pytest.raises(ValueError, match=r"recording into a \.zip HAR is not supported"):
        kept_entries(str(tmp_path / "new.zip"))


def test_empty_har_allowed_for_recording(tmp_path: Path) -> None:
    path = tmp_path / "http.har"
    path.write_text(json.dumps(har({"request": {"url": "https://h/"}})))
    assert len(load_har(str(path), allow_empty=True)) == 0


# --- the matcher ---------------------------------------------------------------------------------


C, S = True, False


def test_transcript_pushes_on_open_then_turn_by_turn() -> None:
    r = Replay(conversation((S, "welcome"), (S, b"\x01"), (C, "a"), (S, "A"), (C, "b"), (S, "B1"),
                            (S, "B2"), close=HarClose(4000, "bye", "server")))  # fmt: skip
    assert texts(r.open()) == ["welcome", b"\x01"]
    assert texts(r.receive("b")) == ["B1", "B2", ("close", 4000)]  # skips "a" and its answer
    assert texts(r.receive("a")) is None  # behind the position now: no match
    assert r.done


def test_transcript_text_and_binary_never_match_each_other() -> None:
    r = Replay(conversation((C, "a"), (S, "text"), (C, b"a"), (S, "bin")))
    assert texts(r.receive(b"a")) == ["bin"]
    assert texts(r.receive("a")) is None


def test_transcript_client_close_is_not_replayed() -> None:
    r = Replay(conversation((C, "a"), (S, "A"), close=HarClose(1000, "", "client")))
    assert texts(r.open()) == []
    assert texts(r.receive("a")) == ["A"]


def test_transcript_recorded_timing_keeps_the_gaps() -> None:
    doc = har(
        entry(
            startedDateTime="2025-11-29T04:20:00.000Z",
            messages=[
                msg("send", "go", time=T0),
                msg("receive", "1", time=T0 + 0.5),
                msg("receive", "2", time=T0 + 0.75),
            ],
        )
    )
    c = read_har(doc).entries("wss://h/ws")[0]
    assert [s.delay for s in Replay(c, "recorded").receive("go") or []] == [0.5, 0.25]
    assert [s.delay for s in Replay(c).receive("go") or []] == [0, 0]


messages = st.lists(
    st.tuples(st.booleans(), st.sampled_from(["a", "b", "c", b"a", b"b"])), max_size=30
)


def numbered(recorded: list[tuple[bool, str | bytes]]) -> list[tuple[bool, str | bytes]]:
    """Make every server message unique, so that order and duplicates show."""
    return [(sent, d if sent else f"s{i}") for i, (sent, d) in enumerate(recorded)]


@given(messages)
def test_property_the_recorded_client_gets_exactly_the_recorded_server(
    recorded: list[tuple[bool, str | bytes]],
) -> None:
    recorded = numbered(recorded)
    r = Replay(conversation(*recorded))
    got = texts(r.open()) or []
    for sent, d in recorded:
        if sent:
            steps = r.receive(d)
            assert steps is not None
            got += texts(steps) or []
    assert got == [d for sent, d in recorded if not sent]


@given(messages, st.lists(st.sampled_from(["a", "b", "c", "x", b"a", b"z"]), max_size=30))
def test_property_any_client_never_reorders_or_duplicates_server_messages(
    recorded: list[tuple[bool, str | bytes]], client: list[str | bytes]
) -> None:
    recorded = numbered(recorded)
    server = [d for sent, d in recorded if not sent]
    r = Replay(conversation(*recorded))
    got = texts(r.open()) or []
    for m in client:
        got += texts(r.receive(m)) or []
    positions = [server.index(m) for m in got]
    assert positions == sorted(set(positions))


# --- writing -------------------------------------------------------------------------------------


def recording() -> Recording:
    r = Recording("wss://h.example/ws?q=1", T0, [("Host", "h.example")], protocol="chat")
    r.message(False, "hello", T0 + 0.1)
    r.message(True, b"\x00\xff", T0 + 0.2)
    r.message(False, "ünïcode", T0 + 0.3)
    assert r.closed(4000, "bye", "server", T0 + 0.4)
    assert not r.closed(1000, "", "client", T0 + 0.5)  # the first close counts
    return r


def test_written_har_reads_back_the_same_conversation(tmp_path: Path) -> None:
    path = tmp_path / "out.har"
    write_har(str(path), [recording().entry()], T0)
    c = load_har(str(path)).entries("wss://h.example/ws?q=1")[0]
    assert list(c.messages()) == [
        (False, T0 + 0.1, "hello"),
        (True, T0 + 0.2, b"\x00\xff"),
        (False, T0 + 0.3, "ünïcode"),
    ]
    assert c.close == HarClose(4000, "bye", "server", T0 + 0.4)
    assert c.protocol == "chat"
    assert c.started == T0


# The HAR 1.2 fields (http://www.softwareishard.com/blog/har-12-spec/) that viewers such as
# Chrome DevTools' import require, per object.
REQUIRED = {
    "log": ["version", "creator", "entries"],
    "creator": ["name", "version"],
    "page": ["startedDateTime", "id", "title", "pageTimings"],
    "entry": ["startedDateTime", "time", "request", "response", "cache", "timings"],
    "request": ["method", "url", "httpVersion", "cookies", "headers", "queryString",
                "headersSize", "bodySize"],
    "response": ["status", "statusText", "httpVersion", "cookies", "headers", "content",
                 "redirectURL", "headersSize", "bodySize"],
    "content": ["size", "mimeType"],
    "timings": ["send", "wait", "receive"],
}  # fmt: skip


def check_har_12(doc: dict[str, Any]) -> None:
    def has(obj: dict[str, Any], kind: str) -> None:
        missing = [k for k in REQUIRED[kind] if k not in obj]
        assert not missing, f"{kind} lacks {missing}"

    log = doc["log"]
    has(log, "log")
    assert log["version"] == "1.2"
    has(log["creator"], "creator")
    page_ids = set()
    for page in log.get("pages", []):
        has(page, "page")
        page_ids.add(page["id"])
    for e in log["entries"]:
        has(e, "entry")
        assert e.get("pageref", next(iter(page_ids))) in page_ids
        has(e["request"], "request")
        has(e["response"], "response")
        has(e["response"]["content"], "content")
        has(e["timings"], "timings")
        assert isinstance(e["time"], int | float) and e["time"] >= 0
        assert e["startedDateTime"].endswith("Z")


def test_written_har_is_har_12_in_chromes_shape(tmp_path: Path) -> None:
    path = tmp_path / "out.har"
    write_har(str(path), [recording().entry()], T0)
    doc = json.loads(path.read_text(encoding="utf-8"))
    check_har_12(doc)
    e = doc["log"]["entries"][0]
    assert e["_resourceType"] == "websocket"
    assert e["request"]["queryString"] == [{"name": "q", "value": "1"}]
    assert e["_webSocketMessages"][1] == {"type": "send", "time": T0 + 0.2, "opcode": 2,
                                          "data": "AP8="}  # fmt: skip
    assert e["_webSocketClose"] == {"code": 4000, "reason": "bye", "by": "server",
                                    "time": T0 + 0.4}  # fmt: skip


def test_merge_replaces_entries_for_recorded_urls_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "old.har"
    old = [entry("https://h.example/ws?q=1"), {"request": {"url": "https://h/"}},
           entry("wss://h.example/other")]  # fmt: skip
    path.write_text(json.dumps({"log": {"version": "1.2", "creator": CREATOR,
                                        "pages": [{"id": "p"}], "entries": old}}))  # fmt: skip
    pages, entries = kept_entries(str(path))
    merged = merge_entries(entries, [recording().entry()])
    assert [e["request"]["url"] for e in merged] == [
        "https://h/",
        "wss://h.example/other",
        "wss://h.example/ws?q=1",
    ]
    write_har(str(path), merged, T0, pages)
    assert [p["id"] for p in json.loads(path.read_text())["log"]["pages"]] == ["p", "wsroute"]


def test_kept_entries_refuses_to_overwrite_a_file_that_is_not_a_har(tmp_path: Path) -> None:
    path = tmp_path / "notes.har"
    path.write_text("my notes")
    with pytest.raises(ValueError, match="invalid JSON"):
        kept_entries(str(path))
    assert kept_entries(str(tmp_path / "new.har")) == ([], [])


def test_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "out.har"
    write_har(str(path), [recording().entry()], T0)
    before = path.read_bytes()
    with pytest.raises(TypeError):  # fails half-way through writing
        write_har(str(path), [{"bad": object()}], T0)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.har"]


def test_pure_har_modules_import_neither_mitmproxy_nor_asyncio() -> None:
    code = (
        "import sys, mitm_wsroute, mitm_wsroute.har, mitm_wsroute.harroute, "
        "mitm_wsroute.cassettes; "
        "bad = [m for m in ('mitmproxy', 'asyncio') if m in sys.modules]; "
        "print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_conversation_is_compact() -> None:
    c = conversation(*[(i % 2 == 0, f"m{i}") for i in range(10)])
    assert isinstance(c, Conversation)
    assert len(c) == 10 and len(c.sent) == 10 and len(c.times) == 10
