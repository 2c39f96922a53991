"""The event stream: commit order, filters, and resuming after the server was killed."""

from __future__ import annotations

import threading
from typing import List

from cairn_client import Client, LogEvent
from conftest import Server
from test_client import DOC


def test_stream_is_in_commit_order_and_resumes_after_a_position(client: Client) -> None:
    client.apply(DOC)
    client.start("doc", {"title": "T"}, id="e1")
    for k in range(4):
        client.send("e1", "edit", {"text": str(k)})
    everything: List[LogEvent] = []
    for ev in client.events():
        everything.append(ev)
        if ev.kind == "transition" and ev.version == 5:
            break
    kinds = [e.kind for e in everything]
    assert kinds[0] == "machine" and "started" in kinds, kinds
    assert [e.position for e in everything] == sorted({e.position for e in everything})
    # From a position in the middle: exactly the rest.
    middle = everything[len(everything) // 2].position
    rest = []
    for ev in client.events(after=middle):
        rest.append(ev)
        if ev.position == everything[-1].position:
            break
    assert [e.position for e in rest] == [e.position for e in everything if e.position > middle]
    assert all(e.namespace == client.namespace for e in everything)


def test_stream_survives_a_sigkilled_server_without_gaps_or_repeats(fresh_server: Server) -> None:
    with Client(fresh_server.url, retries=20) as c:
        c.apply(DOC)
        c.start("doc", {"title": "T"}, id="r1")
        got: List[LogEvent] = []
        target = 1 + 30  # version after 30 edits
        done = threading.Event()

        def follow() -> None:
            with Client(fresh_server.url) as reader:
                for ev in reader.events(instance="r1", max_delay=0.5):
                    got.append(ev)
                    if ev.kind == "transition" and ev.version == target:
                        done.set()
                        return

        t = threading.Thread(target=follow, daemon=True)
        t.start()
        for k in range(30):
            c.send("r1", "edit", {"text": str(k)}, key=f"edit-{k}")
            if k in (9, 19):
                fresh_server.restart()  # SIGKILL, then back on the same port
        assert done.wait(60), f"the stream stopped at {[e.version for e in got][-3:]}"
        t.join(5)
        versions = [e.version for e in got if e.kind == "transition"]
        assert versions == list(range(2, target + 1)), versions
        positions = [e.position for e in got]
        assert positions == sorted(set(positions)), "no entry twice, none out of order"
        assert c.get("r1").context["edits"] == 30
        assert c.verify("r1").ok
