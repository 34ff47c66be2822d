"""End to end: record a real server's conversation through mitmdump, stop the server, replay it.

Every HAR here is made during the test by a real producer: this project's recording
(``wsroute_har_update``), mitmproxy's own ``hardump`` through a plain mitmdump, and Playwright's
``record_har_path`` (in test_browser_har.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import textwrap
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from mitm_wsroute.har import load_har
from tests.conftest import PUSH, start_mitmdump, stop
from tests.test_cli import COMMAND
from tests.test_cli import start as start_cli
from tests.test_e2e_reload import rewrite


def port(server: Any) -> int:
    return int(server.sockets[0].getsockname()[1])


CONVERSATION: list[str | bytes] = ["sum 1 2 3", b"\x01\x02\x03", "hi", "bye"]


async def talk(
    proxy: str, url: str, server_closes: bool = True
) -> tuple[list[str | bytes], tuple[int | None, str]]:
    """The client: what it received, in order, and how it was closed (it closes itself after
    'bye' when the server does not)."""
    got: list[str | bytes] = []
    async with connect(url, proxy=proxy, ping_interval=None, open_timeout=5) as ws:
        got += [await ws.recv() for _ in PUSH]
        await ws.send("sum 1 2 3")
        got += [await ws.recv(), await ws.recv()]
        await ws.send(b"\x01\x02\x03")
        got.append(await ws.recv())
        await ws.send("hi")
        got.append(await ws.recv())
        await ws.send("bye")
        if server_closes:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code is not None
    return got, (ws.close_code, ws.close_reason or "")


EXPECTED: list[str | bytes] = [*PUSH, "6", b"\x10\x10\x10", b"\x03\x02\x01", "echo hi"]


async def record(
    mitmdump: Any, backend: Any, tmp_path: Path, path: str = "/app", keep: bool = False
) -> Any:
    """Record one `talk` through a recording mitmdump; (har, url), and with `keep` the still
    running recorder (else it is stopped)."""
    har = tmp_path / "rec.har"
    url = f"ws://127.0.0.1:{port(backend)}{path}"
    recorder = mitmdump(None, "--set", f"wsroute_har={har}", "--set", "wsroute_har_update=true")
    assert await talk(recorder.proxy, url) == (EXPECTED, (4000, "see you"))
    await recorder.async_wait_for("HAR recording: wrote 1 WebSocket entries")  # at its end
    if keep:
        return har, url, recorder
    stop(recorder)
    return har, url


async def test_record_then_replay_without_the_server(
    mitmdump: Any, backend: Any, tmp_path: Path
) -> None:
    har, url = await record(mitmdump, backend, tmp_path, "/app?room=1")
    backend.close()
    await backend.wait_closed()

    conversation = load_har(str(har)).entries(url)[0]
    assert [d for sent, _, d in conversation.messages() if sent] == CONVERSATION
    assert conversation.close is not None and conversation.close.by == "server"

    replayer = mitmdump(None, "--set", f"wsroute_har={har}")
    for _ in range(2):  # a second socket replays the last entry again
        assert await talk(replayer.proxy, url) == (EXPECTED, (4000, "see you"))


async def test_not_found_abort_and_fallback(mitmdump: Any, backend: Any, tmp_path: Path) -> None:
    har, url = await record(mitmdump, backend, tmp_path)
    aborting = mitmdump(None, "--set", f"wsroute_har={har}")
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url + "/other", proxy=aborting.proxy, open_timeout=5):
            pass
    assert refused.value.response.status_code == 404

    script = """
        from mitm_wsroute import route_web_socket

        @route_web_socket("**/other")
        def other(ws):
            ws.send("from the script")
    """
    falling = mitmdump(
        script, "--set", f"wsroute_har={har}", "--set", "wsroute_har_not_found=fallback"
    )
    async with connect(url + "/other", proxy=falling.proxy, open_timeout=5) as ws:
        assert await ws.recv() == "from the script"
    async with connect(url, proxy=falling.proxy, open_timeout=5) as ws:
        assert await ws.recv() == "welcome"  # the HAR's route still wins where it has an entry


async def test_route_from_har_in_a_script_with_recorded_timing(
    mitmdump: Any, tmp_path: Path
) -> None:
    har = tmp_path / "made.har"
    upstream_script = f"""
        from mitm_wsroute import route_from_har
        route_from_har({str(har)!r}, url="**/timed", update=True)
    """
    async with serve(slow_app, "127.0.0.1", 0, ping_interval=None) as server:
        url = f"ws://127.0.0.1:{port(server)}/timed"
        recorder = mitmdump(upstream_script)
        async with connect(url, proxy=recorder.proxy, open_timeout=5) as ws:
            await ws.send("go")
            assert [await ws.recv() for _ in range(2)] == ["first", "second"]
        stop(recorder)
    replay_script = f"""
        from mitm_wsroute import route_from_har
        route_from_har({str(har)!r}, url="**/timed", timing="recorded")
    """
    replayer = mitmdump(replay_script)
    loop = asyncio.get_running_loop()
    async with connect(url, proxy=replayer.proxy, open_timeout=5) as ws:
        await ws.send("go")
        assert await ws.recv() == "first"
        t = loop.time()
        assert await ws.recv() == "second"
        assert loop.time() - t >= 0.25  # the recorded gap is 0.3 s; a lower bound only


async def test_a_script_reloaded_mid_recording_keeps_what_both_versions_recorded(
    mitmdump: Any, backend: Any, tmp_path: Path
) -> None:
    """The reloaded script's recorder and the old one (its socket still open) write one file:
    neither loses the other's entry."""
    har = tmp_path / "reload.har"
    text = textwrap.dedent(f"""
        from mitm_wsroute import route_from_har
        route_from_har({str(har)!r}, url="**/app", update=True)
    """)
    recorder = mitmdump(text)
    url = f"ws://127.0.0.1:{port(backend)}/app"
    async with connect(url, proxy=recorder.proxy, ping_interval=None) as old:
        assert [await old.recv() for _ in PUSH] == PUSH
        await old.send("hi")
        assert await old.recv() == "echo hi"
        rewrite(tmp_path / "routes0.py", text + "# edited\n")
        await recorder.async_wait_for(r"loaded 1 WebSocket route\(s\) from .*routes0.py", count=2)
        assert await talk(recorder.proxy, url) == (EXPECTED, (4000, "see you"))
    stop(recorder)  # the old socket ended first; the file is written at stop too
    first, second = load_har(str(har)).entries(url)
    assert [d for sent, _, d in first.messages() if sent] == ["hi"]
    assert [d for sent, _, d in second.messages() if sent] == CONVERSATION


async def slow_app(ws: ServerConnection) -> None:
    await ws.recv()
    await ws.send("first")
    await asyncio.sleep(0.3)
    await ws.send("second")
    await ws.wait_closed()


async def test_unmatched_client_message_gets_no_reply_and_is_logged(
    mitmdump: Any, backend: Any, tmp_path: Path
) -> None:
    har, url = await record(mitmdump, backend, tmp_path)
    replayer = mitmdump(None, "--set", f"wsroute_har={har}")
    async with connect(url, proxy=replayer.proxy, open_timeout=5) as ws:
        assert [await ws.recv() for _ in PUSH] == PUSH
        await ws.send("not recorded")
        await ws.send("hi")  # skips the recorded requests before it
        assert await ws.recv() == "echo hi"
    await replayer.async_wait_for("client message 'not recorded' matches nothing recorded")


async def test_plain_mitmdump_hardump_replays(backend: Any, tmp_path: Path, mitmdump: Any) -> None:
    """mitmproxy's own HAR export (``--set hardump=``) of a live session, no addon loaded."""
    har = tmp_path / "mitmproxy.har"
    plain = start_mitmdump(tmp_path, "--set", f"hardump={har}", addon=None)
    url = f"ws://127.0.0.1:{port(backend)}/app"
    try:
        assert (await talk(plain.proxy, url))[0] == EXPECTED
    finally:
        stop(plain)  # hardump is written at exit
    entries = json.loads(har.read_text())["log"]["entries"]
    assert [e["request"]["url"][:7] for e in entries] == ["http://"]  # mitmproxy's shape
    backend.close()
    await backend.wait_closed()
    replayer = mitmdump(None, "--set", f"wsroute_har={har}")
    # mitmproxy's HAR records no close, so the replay does not close: the client does.
    assert await talk(replayer.proxy, url, server_closes=False) == (EXPECTED, (1000, ""))


async def test_kill_9_mid_recording_leaves_the_last_complete_file(
    mitmdump: Any, backend: Any, tmp_path: Path
) -> None:
    har, url, recorder = await record(mitmdump, backend, tmp_path, keep=True)
    first = har.read_bytes()
    async with connect(url, proxy=recorder.proxy, ping_interval=None) as ws:
        assert [await ws.recv() for _ in PUSH] == PUSH
        await ws.send("hi")
        assert await ws.recv() == "echo hi"
        os.killpg(recorder.proc.pid, signal.SIGKILL)  # mid-recording, the socket still open
        recorder.proc.wait()
    assert har.read_bytes() == first
    assert len(load_har(str(har)).entries(url)) == 1


async def test_cli_har_update_records_and_har_replays(backend: Any, tmp_path: Path) -> None:
    """``mitm-wsroute --har FILE --har-update``, then ``mitm-wsroute --har FILE``."""
    har = tmp_path / "cli.har"
    url = f"ws://127.0.0.1:{port(backend)}/app"
    common = ["-p", "0", "--listen-host", "127.0.0.1", "--har", str(har)]
    extra = ["--", "--set", f"confdir={tmp_path}"]
    for update in (["--har-update", "--har-url", "**/app"], []):
        proc, proxy = await asyncio.to_thread(start_cli, COMMAND, *common, *update, *extra)
        try:
            assert await talk(proxy, url) == (EXPECTED, (4000, "see you"))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        if update:
            backend.close()
            await backend.wait_closed()
            assert len(load_har(str(har)).entries(url)) == 1
