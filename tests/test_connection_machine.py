"""A hypothesis state machine over random interleavings of everything that can happen to one
routed socket: peers' messages and closes, route calls, handler registrations.

A fake wire carries out the drained commands and checks the forwarding and close rules as
invariants.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from mitm_wsroute.connection import (
    PAGE,
    SERVER,
    CallHandler,
    Close,
    CloseSide,
    CloseTcp,
    DropSide,
    End,
    Error,
    RoutedConnection,
    Send,
    SetLatency,
    Side,
    StartCloseTimer,
    State,
)
from mitm_wsroute.route import WebSocketRoute

messages = st.one_of(st.text(max_size=8), st.binary(max_size=8))
codes = st.sampled_from([None, 1000, 1001, 1008, 1011, 3000, 4001, 4999])


class RoutedSocket(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.c = RoutedConnection("ws://h/", [])
        self.page = WebSocketRoute(self.c)
        self.server: WebSocketRoute | None = None
        self.peer_open = {PAGE: True, SERVER: False}  # a peer that has not closed or dropped
        self.wire_closed = {PAGE: False, SERVER: False}  # we sent a close / dropped it
        self.sent_by = {PAGE: [], SERVER: []}  # type: dict[Side, list[Any]]
        self.delivered_to = {PAGE: [], SERVER: []}  # type: dict[Side, list[Any]]
        self.close_calls: list[tuple[Side, int | None, str | None]] = []
        self.pending_close: tuple[Side, Close] | None = None
        # the TCP connections and closing handshakes, as the wire sees them
        self.tcp = {PAGE: True, SERVER: False}  # open
        self.frame_out = {PAGE: False, SERVER: False}  # our close frame went out
        self.peer_done = {PAGE: False, SERVER: False}  # its close frame came, or it left
        self.timers: set[Side] = set()  # close timers running
        self.timed_out = {PAGE: False, SERVER: False}
        #: Sides whose closing handshake is not waited for: the server, once the route drops
        #: the client (its connection ends at once; the server is sent 1001, then closed).
        self.given_up = {PAGE: False, SERVER: False}
        self.tcp_closes: list[Side] = []
        self.ends = 0
        self.latency = {PAGE: 0.0, SERVER: 0.0}

    @initialize(
        opening=st.sampled_from(["return", "connect", "accept", "reject", "drop"]),
        early=st.lists(messages, max_size=2),
    )
    def open(self, opening: str, early: list[Any]) -> None:
        if opening == "connect":
            self.server = self.page.connect_to_server()
            self.peer_open[SERVER] = True
            self.tcp[SERVER] = True
            for m in early:
                self.server.send(m)
        elif opening == "accept":
            self.page.accept()
            for m in early:
                self.page.send(m)
        elif opening == "reject":
            self.page.send("never sent")
            self.page.reject(503)
        elif opening == "drop":
            self.page.drop()
        self.c.handler_returned()
        if opening == "reject":  # the client got an HTTP answer: no socket, no layer
            self.peer_open[PAGE], self.wire_closed[PAGE] = False, True
            assert self.c.commands_to_execute() == [] and self.c.both_closed
            return
        self.c.receive_open()
        self.run()

    def route(self, side: Side) -> WebSocketRoute:
        assert self.server is not None or side is PAGE
        return self.page if side is PAGE else self.server  # type: ignore[return-value]

    # --- the fake wire ---------------------------------------------------------------------------

    def receive(self, side: Side, m: Any) -> None:
        self.sent_by[side].append(m)
        self.run()  # the layer carries out older commands first
        to = self.c.receive_message(side, m)
        self.run()
        if to is not None:
            assert to is side.other, f"forwarded to the side it came from: {to}"
            assert not self.wire_closed[to], f"forwarded to {to} after that side was closed"
            self.delivered_to[to].append(m)

    def run(self) -> None:
        while self.c.has_commands:
            for cmd in self.c.commands_to_execute():
                if isinstance(cmd, Send):
                    assert not self.wire_closed[cmd.to], f"{cmd} after that side was closed"
                    self.delivered_to[cmd.to].append(("route", cmd.message))
                elif isinstance(cmd, CloseSide | DropSide):
                    assert not self.wire_closed[cmd.side], f"{cmd} closes a closed side twice"
                    self.wire_closed[cmd.side] = True
                    self.peer_open[cmd.side] = False
                    close = cmd.close if isinstance(cmd, CloseSide) else Close(1006, "")
                    if self.pending_close and self.pending_close[0] is cmd.side.other:
                        assert self.pending_close[1] == close, "mirrored a different close"
                        self.pending_close = None
                    if isinstance(cmd, CloseSide):  # a drop sends no close frame
                        self.frame_out[cmd.side] = True
                elif isinstance(cmd, CallHandler):
                    cmd.handler(*cmd.args)
                elif isinstance(cmd, StartCloseTimer):
                    assert self.frame_out[cmd.side] and cmd.side not in self.timers
                    self.timers.add(cmd.side)
                elif isinstance(cmd, CloseTcp):
                    side = cmd.side
                    assert self.tcp[side], f"{side}'s TCP closed twice, or never open"
                    # RFC 6455 §7.1.1: only once its closing handshake is over, or given up on
                    assert (
                        self.peer_done[side]
                        or self.timed_out[side]
                        or self.given_up[side]
                        or not self.frame_out[side]
                    )
                    if side is PAGE:  # the client's connection goes last
                        assert not self.tcp[SERVER], "client's TCP closed before the server's"
                    self.tcp[side] = False
                    self.tcp_closes.append(side)
                    self.timers.discard(side)
                elif isinstance(cmd, End):
                    assert not any(self.tcp.values()) and self.ends == 0
                    self.ends += 1
                elif isinstance(cmd, SetLatency):
                    assert not self.wire_closed[cmd.to], f"{cmd} after that side was closed"
                    self.latency[cmd.to] = cmd.seconds

    # --- rules -----------------------------------------------------------------------------------

    @precondition(lambda self: self.peer_open[PAGE])
    @rule(m=messages)
    def client_sends(self, m: Any) -> None:
        self.receive(PAGE, m)

    @precondition(lambda self: self.peer_open[SERVER])
    @rule(m=messages)
    def server_sends(self, m: Any) -> None:
        self.receive(SERVER, m)

    @precondition(lambda self: any(self.peer_open.values()))
    @rule(data=st.data(), code=codes, drop=st.booleans())
    def peer_closes(self, data: st.DataObject, code: int | None, drop: bool) -> None:
        side = data.draw(st.sampled_from([s for s in (PAGE, SERVER) if self.peer_open[s]]))
        close = Close(1006, "") if drop else Close(code, None if code is None else "r")
        self.peer_open[side] = False
        was_open = self.c.states[side] is State.OPEN
        had_handler = self.c.handlers[side].close is not None
        other_open = self.c.states[side.other] is State.OPEN
        self.pending_close = (side, close) if was_open and not had_handler and other_open else None
        n = len(self.close_calls)
        self.peer_done[side] = True
        self.c.receive_close(side, close.code, close.reason)
        if drop:
            self.c.receive_connection_lost(side)
        self.wire_closed[side] = True
        self.run()
        assert self.pending_close is None, "close was neither handled nor mirrored"
        if was_open and had_handler:
            assert self.close_calls[n] == (side, close.code, close.reason)

    @precondition(
        lambda self: any(self.frame_out[s] and not self.peer_done[s] and self.tcp[s] for s in Side)
    )
    @rule(data=st.data(), leaves=st.booleans())
    def peer_answers_our_close(self, data: st.DataObject, leaves: bool) -> None:
        waiting = [s for s in Side if self.frame_out[s] and not self.peer_done[s] and self.tcp[s]]
        side = data.draw(st.sampled_from(waiting))
        self.peer_done[side] = True
        if leaves:  # it ends its TCP connection instead of answering
            self.c.receive_connection_lost(side)
        else:
            self.c.receive_close(side, 1000, "")
        self.run()

    @precondition(lambda self: bool(self.timers))
    @rule(data=st.data())
    def close_timer_runs_out(self, data: st.DataObject) -> None:
        side = data.draw(st.sampled_from(sorted(self.timers)))
        self.timers.discard(side)
        self.timed_out[side] = True
        self.c.receive_close_timeout(side)
        self.run()

    @precondition(lambda self: any(self.peer_open.values()))
    @rule(data=st.data(), code=st.sampled_from([1002, 1007, 1009]))
    def peer_breaks_the_protocol(self, data: st.DataObject, code: int) -> None:
        side = data.draw(st.sampled_from([s for s in (PAGE, SERVER) if self.peer_open[s]]))
        self.peer_open[side] = False
        self.c.receive_failure(side, code, "bad")
        self.peer_done[side] = True  # failed: its connection is not waited for
        self.run()
        assert not self.tcp[side] or side is PAGE, "a failed upstream is closed at once"

    @rule(side=st.sampled_from([PAGE, SERVER]), m=messages)
    def route_sends(self, side: Side, m: Any) -> None:
        if side is SERVER and self.server is None:
            return
        self.route(side).send(m)
        self.run()

    @rule(side=st.sampled_from([PAGE, SERVER]), code=codes)
    def route_closes(self, side: Side, code: int | None) -> None:
        if side is SERVER and self.server is None:
            return
        self.route(side).close(code=code, reason=None if code is None else "route")
        self.run()

    @rule(side=st.sampled_from([PAGE, SERVER]))
    def route_drops(self, side: Side) -> None:
        if side is SERVER and self.server is None:
            return
        was_open = self.c.states[side] is State.OPEN
        had_handler = self.c.handlers[side].close is not None
        other_open = self.c.states[side.other] is State.OPEN
        drop = Close(1006, "")
        self.pending_close = (side, drop) if was_open and not had_handler and other_open else None
        n = len(self.close_calls)
        if side is PAGE:
            self.given_up[SERVER] = True
        self.route(side).drop()
        self.run()
        assert self.pending_close is None, "drop was neither handled nor mirrored as a drop"
        if was_open:
            assert self.wire_closed[side]
            if had_handler:
                assert self.close_calls[n] == (side, 1006, "")

    @rule(side=st.sampled_from([PAGE, SERVER]), seconds=st.sampled_from([0, 0.05, 0.3, 2]))
    def route_sets_latency(self, side: Side, seconds: float) -> None:
        if side is SERVER and self.server is None:
            return
        self.route(side).set_latency(seconds)
        self.run()
        if not self.wire_closed[side]:
            assert self.latency[side] == seconds

    @rule(call=st.sampled_from(["reject", "accept", "connect_to_server"]))
    def late_answer(self, call: str) -> None:
        before = dict(self.c.states)
        with pytest.raises(Error):
            getattr(self.page, call)()
        assert self.c.states == before and not self.c.has_commands

    @rule(side=st.sampled_from([PAGE, SERVER]), kind=st.sampled_from(["swallow", "echo", "relay"]))
    def on_message(self, side: Side, kind: str) -> None:
        if side is SERVER and self.server is None:
            return
        route = self.route(side)
        if kind == "swallow":
            route.on_message(lambda m: None)
        elif kind == "echo":
            route.on_message(lambda m: route.send(m))
        elif self.server is not None:
            other = self.route(side.other)
            route.on_message(lambda m: other.send(m))

    @rule(side=st.sampled_from([PAGE, SERVER]), closes_other=st.booleans())
    def on_close(self, side: Side, closes_other: bool) -> None:
        if side is SERVER and self.server is None:
            return

        def handler(code: int | None, reason: str | None) -> None:
            self.close_calls.append((side, code, reason))
            if closes_other and self.server is not None:
                self.route(side.other).close(code=4000, reason="handler")

        self.route(side).on_close(handler)

    # --- invariants ------------------------------------------------------------------------------

    @invariant()
    def order_is_kept_per_direction(self) -> None:
        for to in (PAGE, SERVER):
            forwarded = [m for m in self.delivered_to[to] if not isinstance(m, tuple)]
            it = iter(self.sent_by[to.other])
            assert all(any(m == s for s in it) for m in forwarded), "forwarding reordered"

    @invariant()
    def closed_means_closed(self) -> None:
        for side in (PAGE, SERVER):
            if self.wire_closed[side]:
                assert self.c.states[side] in (State.CLOSED, State.NONE)

    @invariant()
    def a_side_waiting_for_an_answer_has_a_timer(self) -> None:
        for side in Side:
            if self.frame_out[side] and not self.peer_done[side] and self.tcp[side]:
                assert side in self.timers or self.timed_out[side]

    @invariant()
    def both_parties_gone_means_finished(self) -> None:
        if not any(self.peer_open.values()):
            self.peer_done[PAGE] = True  # the client leaves
            self.c.receive_connection_lost(PAGE)
            self.run()
            assert self.c.both_closed
            for side in sorted(self.timers):  # once every handshake is over, the socket ends
                self.timers.discard(side)
                self.timed_out[side] = True
                self.c.receive_close_timeout(side)
            self.run()
            assert self.ends == 1 and not any(self.tcp.values())


TestRoutedSocket = RoutedSocket.TestCase
TestRoutedSocket.settings = settings(max_examples=300, stateful_step_count=30, deadline=None)
