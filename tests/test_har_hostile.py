"""Hostile HAR files get a ValueError that says what is wrong: never a crash, a hang or memory
exhaustion. And HAR messages are exactly `str` or `bytes`."""

from __future__ import annotations

import base64
import json
import os
import struct
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons

from mitm_wsroute.addon import WsRoute
from mitm_wsroute.connection import PAGE, Send
from mitm_wsroute.har import HarClose, Replay, kept_entries, load_har, read_har
from mitm_wsroute.harroute import har_routes
from tests.test_har import ATTACHED, attached, entry, har, jsonl, msg
from tests.test_harroute import route_socket, run


def doc(*entries: Any) -> bytes:
    return json.dumps(har(*entries)).encode()


def one(message: Any = None, **extra: Any) -> bytes:
    """A HAR of one WebSocket entry, with `message` as its message (raw JSON if bytes)."""
    if isinstance(message, bytes):
        return doc(entry(**extra, _webSocketMessages=["@"])).replace(b'"@"', message)
    return doc(entry(messages=[message] if message is not None else [], **extra))


def close(**fields: Any) -> bytes:
    return one(_webSocketClose={"code": 1000, "reason": "", "by": "server", **fields})


M = b'{"type": "send", "time": %s, "opcode": %s, "data": %s}'

HOSTILE = [
    # JSON that Python's json would take, or choke on
    (b'{"log": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "invalid JSON: nested too deeply"),
    (one(M % (b"NaN", b"1", b'"x"')), "invalid JSON: NaN is not a JSON number"),
    (one(M % (b"Infinity", b"1", b'"x"')), "invalid JSON: Infinity is not a JSON number"),
    (one(M % (b"-Infinity", b"1", b'"x"')), "invalid JSON: -Infinity is not a JSON number"),
    (one(M % (b"1" * 5000, b"1", b'"x"')), "invalid JSON: Exceeds the limit"),
    # times
    (one(M % (b"1e999", b"1", b'"x"')), "entry 0: message 0 time inf is not a finite number"),
    (one(M % (b"1" + b"0" * 400, b"1", b'"x"')), "entry 0: message 0 time 1000"),
    (one(msg("send", "x", time="12")), "entry 0: message 0 time '12' is not a finite number"),  # type: ignore[arg-type]
    (one(M % (b"true", b"1", b'"x"')), "entry 0: message 0 time True is not a finite number"),
    (one(M % (b"null", b"1", b'"x"')), "entry 0: message 0 time None is not a finite number"),
    (close(time="soon"), "entry 0: _webSocketClose time 'soon' is not a finite number"),
    (close(time="@").replace(b'"@"', b"-1e999"),
     "entry 0: _webSocketClose time -inf is not a finite number"),
    # opcodes and types
    (one(M % (b"1", b"true", b'"x"')), "entry 0: message 0 has opcode True; only 1 (text)"),
    (one(M % (b"1", b"1.0", b'"x"')), "entry 0: message 0 has opcode 1.0"),
    (one(M % (b"1", b'"1"', b'"x"')), "entry 0: message 0 has opcode '1'"),
    (one(M % (b"1", b"2", b"[]")), "entry 0: message 0 data is not a string"),
    (one({"type": ["send"], "time": 1, "opcode": 1, "data": ""}), "has type ['send'], not"),
    (one(b'"abcd"'), "entry 0: message 0 is not {type, time, opcode, data}: 'abcd'"),
    (one(b"[1, 2, 3, 4]"), "entry 0: message 0 is not {type, time, opcode, data}"),
    (doc(entry(request=["wss://h/ws"])), "entry 0: request is not an object: ['wss://h/ws']"),
    (doc(entry(request={"url": 5})), "entry 0: no request.url"),
    (doc(entry(response="101")), "entry 0: response is not an object: '101'"),
    (doc(entry(response={"content": []})), "entry 0: response.content is not an object"),
    (doc(attached(5)), "entry 0: response.content._file is not a string: 5"),  # type: ignore[arg-type]
    (doc(entry(_webSocketMessages={"0": {}})), "entry 0: _webSocketMessages is not a list"),
    (doc(entry(startedDateTime=1764390000)), "entry 0: startedDateTime is not a string"),
    (doc(entry(response={"headers": {}})), "entry 0: response.headers is not a list"),
    (doc(entry(response={"headers": [{"name": "Sec-WebSocket-Protocol", "value": 1}]})),
     "entry 0: the Sec-WebSocket-Protocol header's value is not a string: 1"),
    (doc(entry(_webSocketClose=[1000])), "entry 0: _webSocketClose is not an object"),
    (close(code=True), "entry 0: _webSocketClose code True is not a close code"),
    (close(code=1000.0), "entry 0: _webSocketClose code 1000.0 is not a close code"),
    (close(code=70000), "entry 0: _webSocketClose code 70000 is not a close code"),
    (close(reason=5), "entry 0: _webSocketClose reason 5 is not a string"),
    (doc(entry(url="wss://h/" + "x" * 10_000_000)),
     "entry 0: request.url is 10,000,008 characters long, more than a server takes"),
    (one({"type": "x" * 10_000_000, "time": 1, "opcode": 1, "data": ""}),
     "entry 0: message 0 has type 'xxxx"),
    (close(by="?"), "entry 0: _webSocketClose by '?' is not 'client' or 'server'"),
    # text that UTF-8 cannot encode
    (one(M % (b"1", b"1", b'"ok \\ud800"')),
     "entry 0: message 0 (opcode 1, text) data cannot be encoded in UTF-8 (surrogates not "
     "allowed at character 3: '\\ud800')"),
    (close(reason="bye \udc00"),
     "entry 0: _webSocketClose reason cannot be encoded in UTF-8"),
]  # fmt: skip

LOADERS: list[Callable[[str], Any]] = [load_har, kept_entries]


@pytest.mark.parametrize("load", LOADERS, ids=["replay", "record"])
@pytest.mark.parametrize(("content", "what"), HOSTILE)
def test_hostile_har_is_refused_with_what_is_wrong(
    tmp_path: Path, load: Callable[[str], Any], content: bytes, what: str
) -> None:
    path = tmp_path / "hostile.har"
    path.write_bytes(content)
    with pytest.raises(ValueError) as e:
        load(str(path))
    message = str(e.value)
    assert message.startswith(f"{path}: ")
    assert what in message
    assert len(message) < 400  # a huge value is not copied into the message


@pytest.mark.parametrize(
    ("lines", "what"),
    [
        (b'{"type": "send", "time": NaN, "opcode": 1, "data": "x"}\n',
         "entry 0: a.jsonl, line 1: invalid JSON: NaN is not a JSON number"),
        (b"[" * 100_000 + b"\n", "entry 0: a.jsonl, line 1: invalid JSON: nested too deeply"),
        (b'{"type": "send", "time": 1, "opcode": true, "data": "x"}\n',
         "entry 0: message 0 has opcode True"),
        (b'{"type": "receive", "time": 1, "opcode": 1, "data": "\\udfff"}\n',
         "entry 0: message 0 (opcode 1, text) data cannot be encoded in UTF-8"),
    ],
)  # fmt: skip
def test_hostile_attached_messages_are_refused(tmp_path: Path, lines: bytes, what: str) -> None:
    (tmp_path / "a.jsonl").write_bytes(lines)
    path = tmp_path / "rec.har"
    path.write_bytes(doc(attached("a.jsonl")))
    with pytest.raises(ValueError, match=f"^{path}: ") as e:
        load_har(str(path))
    assert what in str(e.value)


def test_a_lone_surrogate_is_refused_where_it_would_be_replayed(tmp_path: Path) -> None:
    path = tmp_path / "rec.har"
    path.write_bytes(one(M % (b"1", b"1", b'"\\ud800"'), url="wss://h/a"))
    with pytest.raises(ValueError, match=r"entry 0: message 0 .* cannot be encoded in UTF-8"):
        har_routes(path)  # at load: never a socket that hangs on sending it


# --- sizes ---------------------------------------------------------------------------------------

MiB = 1 << 20


def test_a_har_over_max_size_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.har"
    path.write_bytes(doc(entry(messages=[msg("receive", "x" * (2 * MiB))])))
    with pytest.raises(ValueError) as e:
        load_har(str(path), max_size=MiB)
    assert str(e.value).startswith(f"{path}: the HAR file is too large: 2,097,")
    assert "over the limit of 1,048,576 bytes (max_size; the wsroute_har_max_size option" in str(
        e.value
    )
    assert len(load_har(str(path), max_size=0)) == 1  # 0: no limit


@pytest.mark.parametrize("make", [os.mkfifo, lambda p: os.symlink("/dev/zero", p)])
def test_a_har_that_is_not_a_regular_file_is_refused_without_reading(
    tmp_path: Path, make: Callable[[Path], None]
) -> None:
    path = tmp_path / "endless.har"
    make(path)  # a pipe (opening it would wait for a writer), an endless device
    with pytest.raises(ValueError, match="the HAR file is not a regular file"):
        load_har(str(path))


def bomb(path: Path, name: str, size: int, declared: int | None = None) -> None:
    """A .zip whose member `name` inflates to `size` bytes (a few KiB compressed); its headers
    say `declared` bytes if given (a lying header)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("har.har", json.dumps(har(attached(name))))
        with z.open(name, "w") as member:
            chunk = b"\n" * MiB
            for _ in range(size // MiB):
                member.write(chunk)
    if declared is not None:  # both headers' uncompressed size field
        data = bytearray(path.read_bytes())
        for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
            start = 0
            while (start := data.find(signature, start)) != -1:
                if data[start + 46 : start + 46 + len(name)] == name.encode() or (
                    signature == b"PK\x03\x04"
                    and data[start + 30 : start + 30 + len(name)] == name.encode()
                ):
                    data[start + offset : start + offset + 4] = struct.pack("<I", declared)
                start += 4
        path.write_bytes(bytes(data))


def peak_while(f: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        f()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_a_zip_bomb_is_refused_by_its_declared_size_without_inflating_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bomb.zip"
    bomb(path, "a.jsonl", 64 * MiB)
    assert path.stat().st_size < MiB

    def load() -> None:
        with pytest.raises(ValueError) as e:
            load_har(str(path), max_attached_size=MiB)
        assert "entry 0: its attached file 'a.jsonl' is too large: 67,108,864 bytes" in str(e.value)
        assert "(max_attached_size; the wsroute_har_max_attached_size option" in str(e.value)

    assert peak_while(load) < 4 * MiB


@pytest.mark.parametrize("limit", [MiB, 0])  # 0: no limit; the header's size still bounds it
def test_a_zip_bomb_with_a_lying_header_is_never_inflated_past_it(
    tmp_path: Path, limit: int
) -> None:
    path = tmp_path / "bomb.zip"
    bomb(path, "a.jsonl", 64 * MiB, declared=1000)
    assert zipfile.ZipFile(path).getinfo("a.jsonl").file_size == 1000

    def load() -> None:
        with pytest.raises(ValueError) as e:
            load_har(str(path), max_attached_size=limit)
        assert "entry 0: cannot read its attached file 'a.jsonl': Bad CRC-32" in str(e.value)

    assert peak_while(load) < 4 * MiB


def test_a_zip_whose_har_is_over_max_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rec.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("har.har", doc(entry(messages=[msg("receive", "x" * (2 * MiB))])))
    with pytest.raises(ValueError, match=r"its har\.har is too large: 2,097,"):
        load_har(str(path), max_size=MiB)


def test_attached_files_share_one_limit(tmp_path: Path) -> None:
    line = json.dumps(msg("receive", "x" * 1000)).encode() + b"\n"
    for name in ("a.jsonl", "b.jsonl"):
        (tmp_path / name).write_bytes(line * 600)  # 600 KB each
    path = tmp_path / "rec.har"
    path.write_bytes(doc(attached("a.jsonl"), attached("b.jsonl", "wss://h/b")))
    assert len(load_har(str(path), max_attached_size=2 * MiB)) == 2  # conversations
    with pytest.raises(ValueError) as e:
        load_har(str(path), max_attached_size=MiB)
    assert "entry 1: its attached file 'b.jsonl' is too large" in str(e.value)
    assert "bytes left of it" in str(e.value)


def test_max_sizes_pass_through_har_routes(tmp_path: Path) -> None:
    path = tmp_path / "big.har"
    path.write_bytes(doc(entry(messages=[msg("receive", "x" * 2000)])))
    with pytest.raises(ValueError, match="the HAR file is too large"):
        har_routes(path, max_size=1000)
    with pytest.raises(ValueError, match="the HAR file is too large"):
        har_routes(path, update=True, max_size=1000)
    with pytest.raises(ValueError, match=r"max_attached_size must be 0 \(no limit\) or more"):
        har_routes(path, max_attached_size=-1)


# --- attached files beside the HAR ---------------------------------------------------------------


def test_an_attached_file_linking_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key.jsonl").write_bytes(jsonl(*ATTACHED))
    folder = tmp_path / "har"
    folder.mkdir()
    os.symlink(outside / "key.jsonl", folder / "a.jsonl")
    os.symlink("a.jsonl", folder / "b.jsonl")  # a link to a link out
    (folder / "inside.jsonl").write_bytes(jsonl(*ATTACHED))
    os.symlink("inside.jsonl", folder / "c.jsonl")  # a link that stays inside is fine
    path = folder / "rec.har"
    for name in ("a.jsonl", "b.jsonl"):
        path.write_bytes(doc(attached(name)))
        with pytest.raises(ValueError) as e:
            load_har(str(path))
        assert str(e.value) == (
            f"{path}: entry 0: its attached file {name!r} leads out of the HAR's folder "
            f"{folder} (to {outside / 'key.jsonl'})"
        )
    path.write_bytes(doc(attached("c.jsonl")))
    assert load_har(str(path)).entries("wss://h/ws")[0].data == ["hi", b"\x00\xff"]


def test_an_attached_file_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "a.jsonl")
    path = tmp_path / "rec.har"
    path.write_bytes(doc(attached("a.jsonl")))
    with pytest.raises(ValueError, match=r"entry 0: its attached file 'a\.jsonl' is not a regular"):
        load_har(str(path))


# --- exactly str or bytes ------------------------------------------------------------------------


def types(data: list[Any]) -> list[type]:
    return [type(d) for d in data]


def test_read_messages_are_exactly_str_or_bytes_in_every_shape(tmp_path: Path) -> None:
    inline = read_har(har(entry(messages=[msg("send", "hi"), msg("receive", "AP8=", 2)])))
    assert types(inline.entries("wss://h/ws")[0].data) == [str, bytes]

    (tmp_path / "a.jsonl").write_bytes(jsonl(*ATTACHED))  # Playwright's content="attach"
    beside = tmp_path / "rec.har"
    beside.write_bytes(doc(attached("a.jsonl")))
    archive = tmp_path / "rec.zip"  # Playwright's .zip
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("har.har", doc(attached("a.jsonl")))
        z.writestr("a.jsonl", jsonl(*ATTACHED))
    for path in (beside, archive):
        [c] = load_har(str(path)).entries("wss://h/ws")
        assert c.data == ["hi", b"\x00\xff"]
        assert types(c.data) == [str, bytes]


def test_replayed_messages_are_exactly_str_or_bytes(tmp_path: Path) -> None:
    path = tmp_path / "r.har"
    path.write_bytes(
        doc(
            entry(
                messages=[
                    msg("receive", "text"),
                    msg("receive", base64.b64encode(b"\x00\x01").decode(), 2),
                    msg("send", "AQ==", 2),
                    msg("receive", "answer"),
                    msg("receive", "Ag==", 2),
                ]
            )
        )
    )
    [route] = har_routes(path)
    c, out = route_socket(route.handler)
    c.receive_message(PAGE, bytearray(b"\x01"))  # type: ignore[arg-type]  # bytes-like matches
    out += run(c)
    sent = [command.message for command in out if isinstance(command, Send)]
    assert sent == ["text", b"\x00\x01", "answer", b"\x02"]
    assert types(sent) == [str, bytes, str, bytes]


def test_replay_matches_bytes_like_client_messages_as_bytes() -> None:
    c = read_har(har(entry(messages=[msg("send", "AQ==", 2), msg("receive", "one")])))
    for message in (bytearray(b"\x01"), memoryview(b"\x01")):
        replay = Replay(c.entries("wss://h/ws")[0])
        steps = replay.receive(message)  # type: ignore[arg-type]
        assert steps is not None and [s.message for s in steps] == ["one"]
        assert replay.receive("\x01") is None  # text never matches binary


def test_close_is_read_as_recorded() -> None:
    c = read_har(har(entry(_webSocketClose={"code": 4000, "reason": "ünï", "by": "server"})))
    assert c.entries("wss://h/ws")[0].close == HarClose(4000, "ünï", "server", None)


def test_the_addon_options_set_the_limits(tmp_path: Path) -> None:
    path = tmp_path / "big.har"
    path.write_bytes(doc(entry(messages=[msg("receive", "x" * 2000)])))
    a = WsRoute()
    with taddons.context(Proxyserver(), a) as tctx:
        assert tctx.options.wsroute_har_max_size == 1 << 30
        assert tctx.options.wsroute_har_max_attached_size == 1 << 30
        with pytest.raises(exceptions.OptionsError) as e:
            tctx.configure(a, wsroute_har=str(path), wsroute_har_max_size=1000)
        assert f"Cannot load wsroute_har option: {path}: the HAR file is too large" in str(e.value)
        assert "the wsroute_har_max_size option" in str(e.value)
        tctx.configure(a, wsroute_har=str(path), wsroute_har_max_size=0)  # no limit
        assert a.router.option_routes
