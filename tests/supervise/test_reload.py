"""fastaccept.supervise.reload: the status protocol and the generations' bookkeeping."""
from __future__ import annotations

import socket

from fastaccept.supervise import reload
from fastaccept.supervise.reload import Child, Generations, Slot, StatusReader


def test_status_lines_round_trip_in_pieces():
    data = reload.encode("ready", {"max_connections": 5}) + reload.encode("exit", {"a": 1})
    reader = StatusReader()
    got = []
    for i in range(len(data)):
        got += reader.feed(data[i:i + 1])
    assert got == [("ready", {"max_connections": 5}), ("exit", {"a": 1})]


def test_status_garbage_is_skipped():
    reader = StatusReader()
    assert reader.feed(b"not json\n[1, 2]\n" + reload.encode("error", "boom")) == [
        ("error", "boom")]
    assert reader.feed(b"x" * (reload.MAX_LINE + 1)) == []
    assert reader.feed(reload.encode("ready", {})) == [("ready", {})]


def _generations(n: int) -> Generations:
    gens = Generations()
    sock = socket.socket()      # never used: a slot's socket is only carried here
    sock.close()
    for i in range(n):
        slot = Slot(i, sock)
        slot.current = Child(100 + i, slot, 1, -1, 0.0, state="ready")
        gens.slots.append(slot)
    return gens


def test_a_reload_switches_once_every_new_child_is_ready():
    gens = _generations(2)
    old = [s.current for s in gens.slots]
    assert not gens.switch_due()
    generation = gens.begin()
    assert generation == 2 and gens.target() == 2
    new = []
    for slot in gens.slots:
        slot.next = Child(200 + slot.index, slot, generation, -1, 0.0)
        new.append(slot.next)
    new[0].state = "ready"
    assert not gens.switch_due()
    new[1].state = "ready"
    assert gens.switch_due()
    assert gens.switch() == old
    assert [s.current for s in gens.slots] == new and gens.serving == 2
    assert gens.reloading is None and gens.target() == 2


def test_an_abandoned_reload_gives_back_its_children():
    gens = _generations(2)
    generation = gens.begin()
    gens.slots[0].next = Child(300, gens.slots[0], generation, -1, 0.0)
    assert [c.pid for c in gens.abort()] == [300]
    assert gens.serving == 1 and gens.reloading is None
    assert gens.begin() == 3            # every attempt has a number of its own


def test_detach_says_what_a_child_was():
    gens = _generations(1)
    slot = gens.slots[0]
    current = slot.current
    gens.begin()
    slot.next = Child(400, slot, 2, -1, 0.0)
    assert gens.detach(slot.next) == "next" and slot.next is None
    assert gens.detach(current) == "current" and slot.current is None
    assert gens.detach(current) == "gone"
