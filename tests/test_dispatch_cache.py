# mypy: disallow-untyped-calls=False
# (mitmproxy's AddonManager and hooks are not annotated)
"""The hook-dispatch cache proposed to mitmproxy (upstream/hook-dispatch-cache/addonmanager.patch).

The patch is applied with ``patch`` to a copy of the installed ``mitmproxy/addonmanager.py`` and
that module is what these tests load, so they test the patch itself. Every test runs twice: with
mitmproxy's own `AddonManager` ("stock") and with the patched one ("patched"), and asserts the same
outcome for both: what the test expects is mitmproxy's behaviour, and the cache must keep it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import subprocess
import sys
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from mitmproxy import addonmanager, exceptions, hooks, master, options
from mitmproxy.addons import script
from mitmproxy.proxy.layers.http import HttpRequestHook  # type: ignore[attr-defined]
from mitmproxy.proxy.layers.websocket import WebsocketMessageHook
from mitmproxy.test import taddons, tflow

from tests.upstream_patch import UPSTREAM, patched_spec

PATCH = UPSTREAM / "hook-dispatch-cache" / "addonmanager.patch"
INSTALLED = Path(addonmanager.__file__).resolve()
SITE = INSTALLED.parent.parent  # the root `patch -p1` applies in


def _load_patched(directory: Path) -> ModuleType:
    """mitmproxy/addonmanager.py with the patch applied, as a module of the same name."""
    spec = patched_spec(directory, "hook-dispatch-cache", INSTALLED, "mitmproxy.addonmanager")
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    registered = dict(hooks.all_hooks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # its LoadHook registers "load" again
        spec.loader.exec_module(module)
    hooks.all_hooks.clear()
    hooks.all_hooks.update(registered)
    return module


@pytest.fixture(scope="module")
def patched_module(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return _load_patched(tmp_path_factory.mktemp("patched"))


@pytest.fixture(params=["stock", "patched"])
def impl(
    request: pytest.FixtureRequest, patched_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Which `AddonManager` every Master made in the test gets."""
    if request.param == "patched":
        monkeypatch.setattr(addonmanager, "AddonManager", patched_module.AddonManager)
    return str(request.param)


@pytest.fixture
def tctx(impl: str) -> Iterator[taddons.context]:
    with taddons.context(loadcore=False) as context:
        assert hasattr(context.master.addons, "_walk") == (impl == "patched")
        yield context


calls: list[str] = []


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    calls.clear()


class Rec:
    """An addon that records its hooks: websocket_message (sync), request (async), update."""

    addons: Any  # a list or tuple, only when given

    def __init__(self, name: str, addons: list[Any] | None = None) -> None:
        self.name = name
        if addons is not None:
            self.addons = addons

    def websocket_message(self, flow: Any) -> None:
        calls.append(f"{self.name}.websocket_message")

    async def request(self, flow: Any) -> None:
        await asyncio.sleep(0)
        calls.append(f"{self.name}.request")

    def update(self, flows: Any) -> None:
        calls.append(f"{self.name}.update")

    def __repr__(self) -> str:
        return f"Rec({self.name})"


class Quiet:
    """An addon with no hooks of interest, and one with a module named like a hook."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.websocket_message = logging  # a module: skipped, as _iter_hooks does


def message() -> WebsocketMessageHook:
    return WebsocketMessageHook(tflow.twebsocketflow())


async def dispatch(tctx: taddons.context, event: hooks.Hook | None = None) -> list[str]:
    calls.clear()
    await tctx.master.addons.trigger_event(event or message())
    return list(calls)


def errors(caplog: pytest.LogCaptureFixture) -> list[tuple[str, Any, list[str]]]:
    """The addon errors logged: message, exception type, the traceback's function names."""
    return [
        (
            r.getMessage(),
            r.exc_info[0] if r.exc_info else None,
            [f.name for f in traceback.extract_tb(r.exc_info[2])] if r.exc_info else [],
        )
        for r in caplog.records
        if r.name == "mitmproxy.addonmanager" and r.levelno == logging.ERROR
    ]


def test_patch_applies_to_installed_mitmproxy() -> None:
    out = subprocess.run(
        ["patch", "-p1", "--dry-run", "--batch", "-i", str(PATCH)],
        cwd=SITE, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "checking file mitmproxy/addonmanager.py"


async def test_same_calls_in_same_order(tctx: taddons.context) -> None:
    a = tctx.master.addons
    a.add(Rec("one"), Quiet("q"))
    a.add(Rec("two", addons=[Rec("three"), Quiet("q2"), Rec("four", addons=[Rec("five")])]))
    a.add(Rec("six", addons=[]))
    expected = [f"{n}.websocket_message" for n in ("one", "two", "three", "four", "five", "six")]
    assert await dispatch(tctx) == expected
    walk = getattr(a, "_walk", None)
    assert await dispatch(tctx) == expected  # from the cache
    if hasattr(a, "_walk"):  # patched: the walk was made once, and is the one traverse does
        assert walk is not None and a._walk is walk
        assert walk.nodes == list(addonmanager.traverse(a.chain))
    calls.clear()
    await a.handle_lifecycle(HttpRequestHook(tflow.tflow()))  # async hooks awaited, then update
    names = ("one", "two", "three", "four", "five", "six")
    assert calls == [f"{n}.request" for n in names] + [f"{n}.update" for n in names]


async def test_addon_added_after_first_dispatch_is_called(tctx: taddons.context) -> None:
    a = tctx.master.addons
    a.add(Rec("one"))
    assert await dispatch(tctx) == ["one.websocket_message"]
    a.add(Rec("two", addons=[Rec("three")]))
    assert await dispatch(tctx) == [f"{n}.websocket_message" for n in ("one", "two", "three")]


async def test_removed_addon_is_not_called(tctx: taddons.context) -> None:
    a = tctx.master.addons
    a.add(Rec("one"), Rec("two", addons=[Rec("three"), Rec("four")]), Rec("five"))
    assert len(await dispatch(tctx)) == 5
    a.remove(a.get("one"))
    assert await dispatch(tctx) == [
        f"{n}.websocket_message" for n in ("two", "three", "four", "five")
    ]
    # a nested addon: removed from the manager, and by its parent from its addons
    parent, three = a.get("two"), a.get("three")
    a.remove(three)
    parent.addons.remove(three)
    assert await dispatch(tctx) == [f"{n}.websocket_message" for n in ("two", "four", "five")]
    a.clear()
    assert await dispatch(tctx) == []


async def test_nested_addons_changes_are_seen(tctx: taddons.context) -> None:
    a = tctx.master.addons
    parent, plain = Rec("parent", addons=[Rec("c1")]), Rec("plain")
    a.add(parent, plain)
    assert await dispatch(tctx) == [
        "parent.websocket_message",
        "c1.websocket_message",
        "plain.websocket_message",
    ]
    # traverse() walks .addons as they are now, registered or not
    parent.addons.append(Rec("c2"))
    assert await dispatch(tctx) == [
        "parent.websocket_message", "c1.websocket_message", "c2.websocket_message",
        "plain.websocket_message",
    ]  # fmt: skip
    parent.addons[1] = Rec("c3")  # the same number of children, another one
    assert await dispatch(tctx) == [
        "parent.websocket_message", "c1.websocket_message", "c3.websocket_message",
        "plain.websocket_message",
    ]  # fmt: skip
    parent.addons = (Rec("t1"),)
    assert await dispatch(tctx) == [
        "parent.websocket_message", "t1.websocket_message", "plain.websocket_message",
    ]  # fmt: skip
    plain.addons = [Rec("p1", addons=[Rec("p2")])]  # an addon that had no .addons gets some
    assert await dispatch(tctx) == [
        "parent.websocket_message", "t1.websocket_message",
        "plain.websocket_message", "p1.websocket_message", "p2.websocket_message",
    ]  # fmt: skip
    parent.addons[0].addons = [parent.addons[0]]  # a cycle: traverse recurses until it fails
    await dispatch(tctx)
    del parent.addons[0].addons
    del parent.addons
    assert await dispatch(tctx) == [
        "parent.websocket_message",
        "plain.websocket_message", "p1.websocket_message", "p2.websocket_message",
    ]  # fmt: skip


async def test_chain_changed_directly_is_seen(tctx: taddons.context) -> None:
    a = tctx.master.addons
    a.add(Rec("one"), Rec("two"), Rec("three"))
    assert await dispatch(tctx) == [f"{n}.websocket_message" for n in ("one", "two", "three")]
    a.chain.reverse()
    assert await dispatch(tctx) == [f"{n}.websocket_message" for n in ("three", "two", "one")]
    a.chain = a.chain[:2]
    assert await dispatch(tctx) == [f"{n}.websocket_message" for n in ("three", "two")]


async def test_hook_attribute_changes_are_seen(tctx: taddons.context) -> None:
    a = tctx.master.addons
    one, two = Rec("one"), Quiet("two")
    a.add(one, two)
    assert await dispatch(tctx) == ["one.websocket_message"]
    two.websocket_message = lambda flow: calls.append("two.lambda")  # type: ignore[assignment]
    one.websocket_message = lambda flow: calls.append("one.lambda")  # type: ignore[method-assign]
    assert await dispatch(tctx) == ["one.lambda", "two.lambda"]
    del one.websocket_message
    two.websocket_message = None  # type: ignore[assignment]
    assert await dispatch(tctx) == ["one.websocket_message"]


async def test_script_load_reload_and_unload(
    tctx: taddons.context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "dispatch_cache_calls", sys.modules[__name__])
    path = tmp_path / "route.py"

    def write(version: str) -> None:
        path.write_text(
            "from dispatch_cache_calls import calls, Rec\n"
            f"def websocket_message(flow):\n    calls.append('script {version}')\n"
            f"addons = [Rec('{version}-child')]\n"
        )

    write("v1")
    a = tctx.master.addons
    loader = script.ScriptLoader()
    a.add(Rec("before"), loader, Rec("after"))
    tctx.configure(loader, scripts=[str(path)])
    assert await dispatch(tctx) == ["before.websocket_message", "after.websocket_message"]
    (sc,) = loader.addons
    async with asyncio.timeout(10):
        while sc.ns is None:  # the script's watcher loads it, on its first turn
            await asyncio.sleep(0.01)
    expected = [
        "before.websocket_message",
        "script v1",
        "v1-child.websocket_message",
        "after.websocket_message",
    ]
    assert await dispatch(tctx) == expected
    write("v2")
    sc.loadscript()  # what the watcher does when the file changes
    assert await dispatch(tctx) == [e.replace("v1", "v2") for e in expected]
    tctx.configure(loader, scripts=[])
    assert await dispatch(tctx) == ["before.websocket_message", "after.websocket_message"]


async def test_error_is_logged_and_the_others_run(
    tctx: taddons.context, caplog: pytest.LogCaptureFixture
) -> None:
    class Boom(Rec):
        def websocket_message(self, flow: Any) -> None:
            calls.append(f"{self.name}.boom")
            raise ValueError("boom")

    class Inner:
        def running(self) -> None:
            raise KeyError("inner")

    class Nested(Rec):
        def websocket_message(self, flow: Any) -> None:
            # an addon that invokes another one: the log cuts the traceback after this call
            tctx.master.addons.invoke_addon_sync(Inner(), hooks.RunningHook())

    class Stop(Rec):
        def websocket_message(self, flow: Any) -> None:
            raise StopIteration

    class Async(Rec):
        async def websocket_message(self, flow: Any) -> None:  # type: ignore[override]
            raise RuntimeError("async boom")

    a = tctx.master.addons
    a.add(
        Rec("one"),
        Boom("two", addons=[Rec("skipped")]),
        Rec("three", addons=[Boom("four"), Rec("skipped2")]),
    )
    a.add(Nested("n", addons=[Nested("n2")]), Stop("s"), Async("as"), Rec("last"))
    caplog.set_level(logging.ERROR)
    assert await dispatch(tctx) == [
        "one.websocket_message", "two.boom", "three.websocket_message", "four.boom",
        "last.websocket_message",
    ]  # fmt: skip
    logged = errors(caplog)
    assert logged[:3] + logged[4:] == [
        ("Addon error: boom", ValueError, ["websocket_message"]),
        ("Addon error: boom", ValueError, ["websocket_message"]),
        ("Addon error: 'inner'", KeyError, ["running"]),
        ("Addon error: async boom", RuntimeError, ["websocket_message"]),
    ]
    # A StopIteration leaving a sync hook: what PEP 479 makes of it in stock's invoke_addon
    # coroutine, with mitmproxy's frames only (stock: safecall, trigger_event; patched: the latter).
    message, etype, frames = logged[3]
    assert (message, etype, frames[-1]) == (
        "Addon error: coroutine raised StopIteration",
        RuntimeError,
        "trigger_event",
    )
    cause = caplog.records[3].exc_info[1].__cause__  # type: ignore[index,union-attr]
    assert isinstance(cause, StopIteration)
    assert traceback.extract_tb(cause.__traceback__)[-1].name == "websocket_message"


async def test_not_callable_hook_is_logged(
    tctx: taddons.context, caplog: pytest.LogCaptureFixture
) -> None:
    a = tctx.master.addons
    bad = Rec("bad", addons=[Rec("child")])
    bad.websocket_message = 42  # type: ignore[assignment,method-assign]
    a.add(Rec("one"), bad, Rec("two"))
    caplog.set_level(logging.ERROR)
    assert await dispatch(tctx) == ["one.websocket_message", "two.websocket_message"]
    assert [e[:2] for e in errors(caplog)] == [
        (
            "Addon error: Addon handler websocket_message (Rec(bad)) not callable",
            exceptions.AddonManagerError,
        )
    ]


async def test_addon_halt_stops_the_chain(tctx: taddons.context) -> None:
    class Halt(Rec):
        def websocket_message(self, flow: Any) -> None:
            calls.append("halt")
            raise exceptions.AddonHalt

    a = tctx.master.addons
    halt = Halt("h", addons=[Rec("child")])
    a.add(Rec("one"), halt, Rec("two"))
    assert await dispatch(tctx) == ["one.websocket_message", "halt"]
    a.remove(halt)
    assert await dispatch(tctx) == ["one.websocket_message", "two.websocket_message"]


async def test_options_error_propagates(tctx: taddons.context) -> None:
    class Bad(Rec):
        def websocket_message(self, flow: Any) -> None:
            raise exceptions.OptionsError("nope")

    tctx.master.addons.add(Bad("bad"), Rec("two"))
    with pytest.raises(exceptions.OptionsError):
        await dispatch(tctx)
    assert calls == []


async def test_async_hooks_are_awaited_in_order(tctx: taddons.context) -> None:
    class Slow(Rec):
        async def websocket_message(self, flow: Any) -> None:  # type: ignore[override]
            await asyncio.sleep(0.01)
            calls.append(f"{self.name}.slow")

    tctx.master.addons.add(Slow("one"), Rec("two"), Slow("three", addons=[Rec("four")]))
    assert await dispatch(tctx) == [
        "one.slow",
        "two.websocket_message",
        "three.slow",
        "four.websocket_message",
    ]


async def test_addons_added_and_removed_during_a_dispatch(tctx: taddons.context) -> None:
    a = tctx.master.addons
    late, parent = Rec("late"), Rec("parent", addons=[Rec("c1")])

    class Adder(Rec):
        async def websocket_message(self, flow: Any) -> None:  # type: ignore[override]
            calls.append("adder")
            if late not in a:
                a.add(late)  # appended to the chain being walked: called in this dispatch
                child = Rec("c2")
                a.register(child)  # and a parent's new child: walked in this dispatch too
                parent.addons.append(child)
            a.remove(a.get("victim"))  # the walk goes on over the chain it started with
            a.add(Rec("victim"))

    a.add(Adder("adder"), Rec("victim"), parent, Rec("two"))
    rest = ["parent", "c1", "c2", "two", "late"]
    assert await dispatch(tctx) == [
        "adder", "victim.websocket_message", *(f"{n}.websocket_message" for n in rest)
    ]  # fmt: skip
    assert await dispatch(tctx) == [
        "adder", *(f"{n}.websocket_message" for n in [*rest, "victim"])
    ]  # fmt: skip


async def test_addon_added_by_the_last_hook_of_a_dispatch(tctx: taddons.context) -> None:
    a = tctx.master.addons

    class Adder(Rec):
        def websocket_message(self, flow: Any) -> None:
            calls.append("adder")
            a.add(Rec(f"added{len(a)}"))

    a.add(Rec("one"), Adder("adder"), Quiet("quiet"))
    assert await dispatch(tctx) == ["one.websocket_message", "adder", "added3.websocket_message"]
    assert await dispatch(tctx) == [
        "one.websocket_message", "adder", "added3.websocket_message", "added4.websocket_message"
    ]  # fmt: skip


async def test_not_a_hook_event(tctx: taddons.context, caplog: pytest.LogCaptureFixture) -> None:
    tctx.master.addons.add(Rec("one"), Rec("two"))
    caplog.set_level(logging.ERROR)
    await tctx.master.addons.trigger_event("websocket_message")  # type: ignore[arg-type]
    assert calls == []
    assert [e[1] for e in errors(caplog)] == [AssertionError, AssertionError]


async def test_sync_trigger_and_registration_errors_unchanged(impl: str) -> None:
    m = master.Master(options.Options())
    a = m.addons
    assert hasattr(a, "_walk") == (impl == "patched")
    a.add(Rec("one", addons=[Rec("two")]))
    with pytest.raises(exceptions.AddonManagerError, match="already exists"):
        a.add(Rec("two"))
    with pytest.raises(exceptions.AddonManagerError, match="No such addon"):
        a.remove(Rec("nonexistent"))
    a.trigger(WebsocketMessageHook(tflow.twebsocketflow()))
    assert calls == ["one.websocket_message", "two.websocket_message"]

    class AsyncOnly:
        async def running(self) -> None:
            pass

    a.add(AsyncOnly())
    with pytest.raises(exceptions.AddonManagerError, match="cannot be called from sync context"):
        a.invoke_addon_sync(a.get("asynconly"), hooks.RunningHook())


class Node:
    """An addon of the random worlds below, its hook set by `kind`."""

    def __init__(self, log: list[str], name: str, kind: str, addons: list[Any] | None) -> None:
        self.name, self.log = name, log
        set_hook(self, kind)
        if addons is not None:
            self.addons = addons


def set_hook(node: Node, kind: str) -> None:
    log, name = node.log, node.name

    def sync(flow: Any) -> None:
        log.append(name)

    async def async_(flow: Any) -> None:
        await asyncio.sleep(0)
        log.append(f"{name}~")

    def fail(flow: Any) -> None:
        log.append(f"{name}!")
        raise ValueError(name)

    def halt(flow: Any) -> None:
        log.append(f"{name}#")
        raise exceptions.AddonHalt

    hooks_by_kind: dict[str, Any] = {
        "sync": sync, "async": async_, "fail": fail, "halt": halt, "module": logging
    }  # fmt: skip
    if kind in hooks_by_kind:
        node.websocket_message = hooks_by_kind[kind]  # type: ignore[attr-defined]
    elif "websocket_message" in vars(node):
        del node.websocket_message  # type: ignore[attr-defined]


KINDS = ["sync", "sync", "sync", "async", "fail", "halt", "module", "none", "none", "none"]


def random_ops(seed: int) -> list[tuple[Any, ...]]:
    """A random sequence of changes and dispatches, the same for both implementations."""
    import random

    rnd = random.Random(seed)
    count = 0

    def spec(depth: int = 0) -> tuple[Any, ...]:
        nonlocal count
        count += 1
        children = None
        if depth < 2 and rnd.random() < 0.3:
            children = [spec(depth + 1) for _ in range(rnd.randint(0, 3))]
        return (f"n{count}", rnd.choice(KINDS), children)

    ops: list[tuple[Any, ...]] = [("add", spec()) for _ in range(4)]
    for _ in range(40):
        op = rnd.choice(["dispatch"] * 4 + ["add", "remove", "child", "addons", "hook", "reverse"])
        if op == "add":
            ops.append(("add", spec()))
        elif op == "child":
            ops.append(("child", rnd.randint(1, count), spec(2)))
        elif op == "addons":
            ops.append(
                ("addons", rnd.randint(1, count), [spec(2) for _ in range(rnd.randint(0, 2))])
            )
        elif op == "hook":
            ops.append(("hook", rnd.randint(1, count), rnd.choice(KINDS)))
        elif op == "remove":
            ops.append(("remove", rnd.randint(0, 5)))
        else:
            ops.append((op,))
    return ops


async def run_world(ops: list[tuple[Any, ...]], caplog: pytest.LogCaptureFixture) -> list[Any]:
    """Apply `ops` to a fresh manager; what each dispatch called and logged."""
    log: list[str] = []
    nodes: dict[str, Node] = {}
    a = master.Master(options.Options()).addons

    def build(s: tuple[Any, ...]) -> Node:
        name, kind, children = s
        nodes[name] = Node(
            log, name, kind, None if children is None else [build(c) for c in children]
        )
        return nodes[name]

    transcript: list[Any] = []
    for op in ops:
        if op[0] == "add":
            a.add(build(op[1]))
        elif op[0] == "remove" and a.chain:
            try:  # a subtree with children that were never registered: stock raises midway
                a.remove(a.chain[op[1] % len(a.chain)])
            except exceptions.AddonManagerError as e:
                transcript.append(str(e))
        elif op[0] == "child" and f"n{op[1]}" in nodes:
            node = nodes[f"n{op[1]}"]
            if isinstance(getattr(node, "addons", None), list):
                node.addons.append(build(op[2]))
        elif op[0] == "addons" and f"n{op[1]}" in nodes:
            nodes[f"n{op[1]}"].addons = [build(s) for s in op[2]]
        elif op[0] == "hook" and f"n{op[1]}" in nodes:
            set_hook(nodes[f"n{op[1]}"], op[2])
        elif op[0] == "reverse":
            a.chain.reverse()
        elif op[0] == "dispatch":
            log.clear()
            caplog.clear()
            await a.trigger_event(message())
            transcript.append((list(log), errors(caplog)))
    return transcript


@pytest.mark.parametrize("seed", range(40))
async def test_random_worlds_match_stock(
    seed: int, patched_module: ModuleType, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Random trees of addons (sync, async, failing, halting hooks, modules named like the hook),
    changed between dispatches (added, removed, children added or replaced, hooks rebound, the
    chain reordered): the patched manager calls and logs exactly what the stock one does."""
    caplog.set_level(logging.ERROR)
    ops = random_ops(seed)
    stock = await run_world(ops, caplog)
    monkeypatch.setattr(addonmanager, "AddonManager", patched_module.AddonManager)
    stock_walks: list[int] = []
    fallback = patched_module.AddonManager._trigger_event_from

    async def counted(self: Any, chain: Any, start: int, event: Any) -> None:
        stock_walks.append(start)
        await fallback(self, chain, start, event)

    monkeypatch.setattr(patched_module.AddonManager, "_trigger_event_from", counted)
    patched = await run_world(ops, caplog)
    assert patched == stock
    assert stock_walks == []  # every dispatch took the cached path
    assert sum(len(t[0]) for t in stock if isinstance(t, tuple)) > 0  # something was called
