"""A hypothesis state machine over the real layer: random message sizes and fragmentation,
split TCP reads, the size and retention options, on an intercepted socket.

The layer runs as mitmproxy runs it (events in, commands out, hooks answered, the wake-ups of
`set_latency` delivered on a fake clock); wsproto peers stand in for the client and the server
and decode what the layer sends them. Routes drop sides and change their latency in between.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import wsproto
import wsproto.events as wse
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.context import Context
from mitmproxy.test import tflow
from mitmproxy.websocket import WebSocketData

from mitm_wsroute import layer
from mitm_wsroute.connection import PAGE, SERVER, RoutedConnection, Side, State
from mitm_wsroute.messages import FRAME_COST
from mitm_wsroute.route import WebSocketRoute

MAX = 300  # wsroute_max_message_size for the machine


class Observer:
    """The layer's observer (the test API records a socket through it): what it was told."""

    def __init__(self) -> None:
        self.messages: list[tuple[bool, Any]] = []
        self.closes: list[int] = []

    def message(self, sent: bool, data: str | bytes) -> None:
        self.messages.append((sent, data))

    def closed(self, code: int, reason: str) -> None:
        self.closes.append(code)


class LayerMachine(RuleBasedStateMachine):
    @initialize(keep=st.integers(0, 6))
    def start(self, keep: int) -> None:
        options = SimpleNamespace(
            wsroute_max_message_size=MAX,
            wsroute_keep_messages=keep,
            wsroute_message_hooks=True,
            wsroute_close_timeout_ms=5000,
        )
        self.keep = keep
        self.now = 1000.0
        self.delay_wakeups: list[tuple[float, commands.RequestWakeup]] = []
        self.saved_clock = layer.clock
        layer.clock = lambda: self.now
        self.flow = tflow.twebsocketflow(messages=False)
        self.flow.websocket = None
        self.connection = connection = RoutedConnection("ws://example.com/ws", [])
        self.route = {PAGE: WebSocketRoute(connection)}
        self.route[SERVER] = self.route[PAGE].connect_to_server()
        socket = layer.RoutedSocket(connection, lambda h, a, url: h(*a), lambda e: None)
        self.observer = socket.observer = Observer()
        layer.routed_socket(self.flow, socket)
        self.flow.websocket = WebSocketData()
        ctx = Context(self.flow.client_conn, options)  # type: ignore[arg-type]
        ctx.server = self.flow.server_conn
        self.layer = layer.RoutedWebsocketLayer(ctx, self.flow)
        self.page_sent: list[Any] = []  # what the client sent that the proxy took
        # the peers: what the client and the server see of the layer
        self.peer = {
            PAGE: wsproto.Connection(wsproto.ConnectionType.CLIENT),
            SERVER: wsproto.Connection(wsproto.ConnectionType.SERVER),
        }
        self.received: dict[Side, list[Any]] = {PAGE: [], SERVER: []}
        self.expected: dict[Side, list[Any]] = {PAGE: [], SERVER: []}  # what each peer should get
        self.closes: dict[Side, list[int]] = {PAGE: [], SERVER: []}
        self.partial: dict[Side, list[Any]] = {PAGE: [], SERVER: []}
        self.frames = {PAGE: 0, SERVER: 0}
        self.received_frames: dict[Side, list[int]] = {PAGE: [], SERVER: []}
        self.open = {PAGE: True, SERVER: True}
        self.timers: list[commands.RequestWakeup] = []
        self.tcp_closed: list[Side] = []
        self.answered = {PAGE: False, SERVER: False}  # the peer answered our close frame
        self.timed_out: set[Side] = set()
        self.dropped = {PAGE: False, SERVER: False}  # a route dropped it (or the other side)
        self.overflowed = {PAGE: False, SERVER: False}
        self.feed(events.Start())

    def teardown(self) -> None:
        if hasattr(self, "saved_clock"):
            layer.clock = self.saved_clock

    def feed(self, event: events.Event) -> None:
        """Run the layer on `event`, answer its hooks, deliver its output to the peers."""
        pending = [event]
        while pending:
            for command in self.layer.handle_event(pending.pop(0)):
                if isinstance(command, commands.StartHook):
                    pending.append(events.HookCompleted(command))
                elif isinstance(command, layer._DelayWakeup):
                    self.delay_wakeups.append((self.now + command.delay, command))
                elif isinstance(command, commands.RequestWakeup):
                    self.timers.append(command)
                elif isinstance(command, commands.CloseConnection):
                    side = PAGE if command.connection == self.layer.context.client else SERVER
                    assert side not in self.tcp_closed
                    self.tcp_closed.append(side)
                elif isinstance(command, commands.SendData):
                    side = PAGE if command.connection == self.layer.context.client else SERVER
                    self.peer[side].receive_data(command.data)
                    for ev in self.peer[side].events():
                        if isinstance(ev, wse.Message):
                            self.partial[side].append(ev.data)
                            self.frames[side] += ev.frame_finished
                            if ev.message_finished:
                                parts = self.partial[side]
                                joined = (
                                    "".join(parts) if isinstance(ev.data, str) else b"".join(parts)
                                )
                                self.received[side].append(joined)
                                self.received_frames[side].append(self.frames[side])
                                self.partial[side], self.frames[side] = [], 0
                        elif isinstance(ev, wse.CloseConnection):
                            self.closes[side].append(ev.code)
                            self.open[side] = False

    def both_open(self) -> bool:
        return all(self.open.values()) and all(
            s is State.OPEN for s in self.connection.states.values()
        )

    def waiting(self, side: Side) -> int:
        return len(self.layer.delays.lines[side]) if self.layer.delays is not None else 0

    def advance(self, dt: float) -> None:
        """Time passes: the layer gets the latency wake-ups due by then, earliest first, each
        at its time (close timers run out by their own rule)."""
        end = self.now + dt
        while due := sorted((t for t in self.delay_wakeups if t[0] <= end), key=lambda t: t[0]):
            self.delay_wakeups.remove(due[0])
            self.now = max(self.now, due[0][0])
            self.feed(events.Wakeup(due[0][1]))
        self.now = end

    def note_overflow(self, side: Side) -> None:
        """More than MAX bytes waited behind a latency: that side was closed with 1009, and
        what waited is gone."""
        if self.connection.states[side] is State.CLOSED and not self.overflowed[side]:
            assert self.layer.delays is not None
            self.overflowed[side] = True
            self.expected[side] = list(self.received[side])

    # --- rules -----------------------------------------------------------------------------------

    @precondition(both_open)
    @rule(
        side=st.sampled_from([PAGE, SERVER]),
        text=st.booleans(),
        size=st.integers(0, MAX + 50),
        frames=st.integers(1, 4),
        reads=st.integers(1, 4),
    )
    def peer_sends(self, side: Side, text: bool, size: int, frames: int, reads: int) -> None:
        data: Any = (
            "é" * (size // 2) if text else bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        )
        step = max(1, len(data) // frames)
        pieces = [data[i : i + step] for i in range(0, len(data), step)] or [data]
        wire = b"".join(
            self.peer[side].send(
                (wse.TextMessage if text else wse.BytesMessage)(
                    p, message_finished=i == len(pieces) - 1
                )
            )
            for i, p in enumerate(pieces)
        )
        chunk = max(1, len(wire) // reads)
        conn = self.layer.context.client if side is PAGE else self.layer.context.server
        # what counts against the limit: the payload, and each frame's header but the last's
        too_big = len(data) + FRAME_COST * (len(pieces) - 1) > MAX
        if not too_big:
            self.expected[side.other].append(data)
            if side is PAGE:
                self.page_sent.append(data)
        for i in range(0, len(wire), chunk):
            self.feed(events.DataReceived(conn, wire[i : i + chunk]))
        if too_big:  # RFC 6455 §7.4.1: 1009 to the sender, mirrored to the other side
            self.advance(60)  # past any latency
            assert self.closes[side] == [1009]
            assert self.closes[side.other] == [1009]
        else:
            self.note_overflow(side.other)  # the only way it can close now
        if not too_big and not self.waiting(side.other) and not self.overflowed[side.other]:
            assert self.received[side.other][-1] == data  # forwarded, unchanged...
            assert self.received_frames[side.other][-1] == len(pieces)  # ...in its own frames

    @rule(side=st.sampled_from([PAGE, SERVER]), size=st.integers(0, MAX * 2))
    def route_sends(self, side: Side, size: int) -> None:
        data = b"r" * size  # the size limit is for what arrives, not for what a route sends
        was_open = self.connection.states[side] is State.OPEN
        self.route[side].send(data)
        self.feed(events.DataReceived(self.layer.context.client, b""))  # any event drains
        if was_open:
            self.expected[side].append(data)
            self.note_overflow(side)  # past MAX waiting behind a latency

    @rule(side=st.sampled_from([PAGE, SERVER]), seconds=st.sampled_from([0, 0.1, 0.5, 2]))
    def route_sets_latency(self, side: Side, seconds: float) -> None:
        self.route[side].set_latency(seconds)
        self.feed(events.DataReceived(self.layer.context.client, b""))

    @rule(dt=st.sampled_from([0.05, 0.1, 0.5, 3]))
    def time_passes(self, dt: float) -> None:
        self.advance(dt)

    @rule(side=st.sampled_from([PAGE, SERVER]))
    def route_drops(self, side: Side) -> None:
        was_open = {s: self.connection.states[s] is State.OPEN for s in (PAGE, SERVER)}
        self.route[side].drop()
        self.feed(events.DataReceived(self.layer.context.client, b""))
        self.advance(60)  # past any latency: what waited went out first, then the drop
        for s in (PAGE, SERVER):  # no on_close here: the drop is mirrored as a drop
            if was_open[s]:
                self.dropped[s] = True
                assert s in self.tcp_closed and self.open[s]  # no close frame, TCP gone

    @precondition(both_open)
    @rule(side=st.sampled_from([PAGE, SERVER]), code=st.sampled_from([1000, 4000]))
    def route_closes_outside_an_event(self, side: Side, code: int) -> None:
        # from a task or another thread: the connection records it, a RouteWakeup drains it
        self.route[side].close(code=code)
        self.feed(layer.RouteWakeup(self.flow, layer._NO_MESSAGE))
        self.advance(60)  # past any latency: the close frames and their timers
        assert self.closes == {side: [code], side.other: [code]}  # mirrored
        assert self.tcp_closed == []  # both wait for their peer's answer
        assert len(self.timers) == 2  # one close timer per closing handshake

    @precondition(lambda self: any(self.closes.values()))
    @rule(side=st.sampled_from([PAGE, SERVER]))
    def peer_answers_our_close(self, side: Side) -> None:
        if not self.closes[side] or self.answered[side] or side in self.tcp_closed:
            return
        self.answered[side] = True
        wire = self.peer[side].send(wse.CloseConnection(self.closes[side][0]))
        conn = self.layer.context.client if side is PAGE else self.layer.context.server
        self.feed(events.DataReceived(conn, wire))

    @precondition(lambda self: bool(self.timers))
    @rule()
    def close_timer_runs_out(self) -> None:
        timer = self.timers.pop(0)
        self.timed_out.add(self.layer.close_timers[timer])
        self.feed(events.Wakeup(timer))

    # --- invariants ------------------------------------------------------------------------------

    @invariant()
    def delivered_in_order_and_complete(self) -> None:
        for side in (PAGE, SERVER):
            got, want = self.received[side], self.expected[side]
            assert got == want[: len(got)]  # in order, never more than was sent
            if not self.waiting(side):
                assert got == want  # all of it once nothing waits
            if self.overflowed[side] and not self.waiting(side):
                assert self.closes[side] and self.closes[side][0] == 1009

    @invariant()
    def tcp_closes_after_the_handshake_server_first(self) -> None:
        if PAGE in self.tcp_closed:
            assert self.tcp_closed[0] is SERVER  # the client's connection goes last
        for side in self.tcp_closed:  # a side the peer breaks (1009) is not waited for
            assert (
                self.answered[side]
                or side in self.timed_out
                or self.closes[side] == [1009]
                or self.dropped[side]
            )
        if self.tcp_closed == [SERVER, PAGE]:
            assert self.flow.live is False  # websocket_end ran, the flow is over

    @invariant()
    def the_observer_sees_the_clients_wire(self) -> None:
        """The observer (the test API's record of a socket) sees the client's side as its
        wire carries it: each message the client sent, each it got once it went out (after
        any latency), and the first close frame it got, or 1006 when it was dropped."""
        observed = self.observer.messages
        assert [data for sent, data in observed if sent] == self.page_sent
        assert [data for sent, data in observed if not sent] == self.received[PAGE]
        if self.closes[PAGE]:
            assert self.observer.closes[:1] == self.closes[PAGE][:1]
        elif self.dropped[PAGE] and PAGE in self.tcp_closed:
            assert self.observer.closes == [1006]
        else:
            assert self.observer.closes == []

    @invariant()
    def retention_is_bounded(self) -> None:
        assert self.flow.websocket is not None
        if self.keep:
            assert len(self.flow.websocket.messages) < 2 * self.keep


TestLayerMachine = LayerMachine.TestCase
TestLayerMachine.settings = settings(max_examples=100, stateful_step_count=20, deadline=None)


def test_latency_transcript() -> None:
    """The machine as a harness: what waits, when it goes out, and that 0 removes the latency
    only once what waited went out."""
    m = LayerMachine()
    m.start(keep=0)
    try:
        m.route_sets_latency(PAGE, 0.5)
        m.route_sends(PAGE, 3)
        m.peer_sends(SERVER, text=False, size=6, frames=2, reads=2)  # forwarded, waits too
        m.route_sends(PAGE, 4)
        assert m.received[PAGE] == [] and len(m.delay_wakeups) == 1  # one for all of it
        m.time_passes(0.1)
        assert m.received[PAGE] == []
        m.route_sets_latency(PAGE, 0)
        m.route_sends(PAGE, 6)  # waits behind what waits
        assert m.received[PAGE] == []
        m.time_passes(0.5)
        assert m.received[PAGE] == [b"rrr", b"xxxxxx", b"rrrr", b"rrrrrr"]
        m.route_sends(PAGE, 7)  # nothing waits, no latency: at once
        assert m.received[PAGE][-1] == b"r" * 7 and m.waiting(PAGE) == 0
        assert m.received_frames[PAGE][1] == 2  # forwarded in its own frames
        m.route_sets_latency(SERVER, 2)
        m.route_drops(SERVER)  # the drop waits too, then is mirrored to the client
        assert m.tcp_closed == [SERVER, PAGE] and m.closes == {PAGE: [], SERVER: []}
        assert m.flow.live is False  # websocket_end ran once nothing waited
    finally:
        m.teardown()


def test_latency_overflow_fails_that_side_alone() -> None:
    """Past the size limit waiting, that side gets 1009 at once and what waited for it is
    gone; the close mirrored to the other side waits behind that side's data, and never
    counts against the limit itself."""
    m = LayerMachine()
    m.start(keep=0)
    try:
        m.route_sets_latency(PAGE, 0.1)
        m.route_sets_latency(SERVER, 0.1)
        m.route_sends(PAGE, 1)
        m.route_sends(SERVER, 255)  # close to the limit (300 bytes) with its frame header
        m.route_sends(PAGE, 294)  # too much waiting for the client
        assert m.closes[PAGE] == [1009] and m.received[PAGE] == []
        assert m.closes[SERVER] == []  # its 1009 waits behind its data
        m.time_passes(0.1)
        assert m.received[SERVER] == [b"r" * 255] and m.closes[SERVER] == [1009]
    finally:
        m.teardown()
