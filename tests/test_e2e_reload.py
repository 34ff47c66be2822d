"""End to end: route scripts reload while mitmdump runs; broken scripts break nothing else."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from tests.conftest import MESSAGE_HOOKS, ROOT, start_mitmdump, stop

V1 = """
from mitm_wsroute import route_web_socket
route_web_socket("**/mock", lambda ws: ws.on_message(lambda m: ws.send(f"v1 {m}")))
"""


def rewrite(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, (st.st_atime, st.st_mtime + 1))  # a new mtime even on coarse file systems


async def ask(ws: Any, message: str) -> str:
    await ws.send(message)
    return str(await asyncio.wait_for(ws.recv(), 5))


async def test_edit_takes_effect_for_new_sockets_live_ones_keep_handlers(
    mitmdump: Any, tmp_path: Path
) -> None:
    p = mitmdump(V1)
    script = tmp_path / "routes0.py"
    async with connect("ws://app.invalid/mock", proxy=p.proxy) as live:
        assert await ask(live, "a") == "v1 a"
        rewrite(script, V1.replace("v1", "v2"))
        await p.async_wait_for(r"loaded 1 WebSocket route\(s\) from .*routes0.py", 5, count=2)
        async with connect("ws://app.invalid/mock", proxy=p.proxy) as new:
            assert await ask(new, "b") == "v2 b"
        assert await ask(live, "c") == "v1 c"  # the live socket keeps the handler it started with


HOOK = """
def websocket_message(flow):
    message = flow.websocket.messages[-1]
    if not message.from_client:
        message.content += b" (hook v1)"
"""

INTERCEPT = """
from mitm_wsroute import route_web_socket
route_web_socket("**/echo", lambda ws: ws.connect_to_server())
"""


async def test_a_live_socket_calls_another_addons_hooks_as_reloaded(
    mitmdump: Any, upstream: Any, tmp_path: Path
) -> None:
    # As mitmproxy does: the message after another addon's reload goes to its new code (over
    # wss, permessage-deflate offered and agreed, as real clients and servers do)
    up = await upstream(tls=True)
    p = mitmdump(INTERCEPT, *MESSAGE_HOOKS, other_addon=HOOK)
    hook = tmp_path / "addon0.py"
    async with connect(up.url("/echo"), proxy=p.proxy, ssl=p.ca()) as live:
        assert live.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
        assert await ask(live, "a") == "a (hook v1)"
        rewrite(hook, HOOK.replace("v1", "v2"))
        await p.async_wait_for(r"Loading script .*addon0\.py", count=2)
        assert await ask(live, "b") == "b (hook v2)"
        # an async hook: only mitmproxy's machinery can await it, and carries the socket on
        rewrite(hook, HOOK.replace("v1", "v3").replace("def ", "async def "))
        await p.async_wait_for(r"Loading script .*addon0\.py", count=3)
        assert [await ask(live, m) for m in "cd"] == ["c (hook v3)", "d (hook v3)"]
        rewrite(hook, "")  # no hook any more
        await p.async_wait_for(r"Loading script .*addon0\.py", count=4)
        assert await ask(live, "e") == "e"


async def test_broken_reload_keeps_previous_version(mitmdump: Any, tmp_path: Path) -> None:
    p = mitmdump(V1)
    script = tmp_path / "routes0.py"
    rewrite(script, V1.replace("v1", "v2") + "\nraise RuntimeError('half-edited')\n")
    await p.async_wait_for("RuntimeError: half-edited")
    await p.async_wait_for(r"failed to load \(previous version stays active\)")
    async with connect("ws://app.invalid/mock", proxy=p.proxy) as ws:
        assert await ask(ws, "x") == "v1 x"


async def test_broken_script_at_startup_does_not_stop_the_others(
    mitmdump: Any, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_anywhere\n")
    p = mitmdump(V1, "--set", f"wsroute_scripts={broken}")
    await p.async_wait_for("ModuleNotFoundError: No module named 'no_such_module_anywhere'")
    async with connect("ws://app.invalid/mock", proxy=p.proxy) as ws:
        assert await ask(ws, "y") == "v1 y"


async def test_reloading_the_addon_script_itself(tmp_path: Path) -> None:
    # mitmproxy reloads a changed -s script: the addon comes back with its routes, and a live
    # socket keeps working across it.
    addon = tmp_path / "wsroute_addon.py"
    addon.write_text((ROOT / "addons" / "wsroute.py").read_text())
    script = tmp_path / "routes.py"
    script.write_text(V1)
    p = start_mitmdump(tmp_path, "--set", f"wsroute_scripts={script}", addon=addon)
    try:
        async with connect("ws://app.invalid/mock", proxy=p.proxy) as live:
            assert await ask(live, "a") == "v1 a"
            rewrite(addon, addon.read_text() + "\n# edited\n")
            await p.async_wait_for(r"Loading script .*wsroute_addon.py", count=2)
            async with connect("ws://app.invalid/mock", proxy=p.proxy) as new:
                assert await ask(new, "b") == "v1 b"
            assert await ask(live, "c") == "v1 c"
    finally:
        stop(p)


async def test_a_script_exiting_at_start_up_or_reload_stops_nothing(
    mitmdump: Any, tmp_path: Path
) -> None:
    exits = tmp_path / "exits.py"
    exits.write_text("raise SystemExit(3)\n")
    p = mitmdump(V1, "--set", f"wsroute_scripts={exits}")
    await p.async_wait_for(r"exits\.py failed to load \(no routes\)")
    await p.async_wait_for("SystemExit: 3")
    async with connect("ws://app.invalid/mock", proxy=p.proxy) as ws:
        assert await ask(ws, "y") == "v1 y"  # mitmdump runs, the other script's route works
    script = tmp_path / "routes0.py"
    rewrite(script, V1.replace("v1", "v2") + "\nraise SystemExit(4)\n")
    await p.async_wait_for("SystemExit: 4")
    await p.async_wait_for(r"routes0\.py failed to load \(previous version stays active\)")
    async with connect("ws://app.invalid/mock", proxy=p.proxy) as ws:
        assert await ask(ws, "z") == "v1 z"
    assert p.proc.poll() is None
