"""The async client: the same calls, awaited, many at once."""

from __future__ import annotations

import asyncio

import pytest

from cairn_client import AsyncClient, errors
from conftest import Server
from test_client import DOC


def test_async_calls_concurrently(server: Server, ns: str) -> None:
    async def main() -> None:
        async with AsyncClient(server.url, namespace=ns) as c:
            assert (await c.apply(DOC)).created
            await asyncio.gather(*(c.start("doc", {"title": f"t{i}"}, id=f"a{i}") for i in range(20)))
            # Twenty instances, five keyed edits each, all in flight together; each key
            # sent twice.
            sends = [
                c.send(f"a{i}", "edit", {"text": str(k)}, key=f"k{k}")
                for i in range(20)
                for k in range(5)
                for _ in range(2)
            ]
            results = await asyncio.gather(*sends)
            assert sum(1 for r in results if r.replayed) == 100
            ids = [i.id async for i in c.iter_instances(page_size=7)]
            assert sorted(ids) == sorted(f"a{i}" for i in range(20))
            for i in range(20):
                inst = await c.get(f"a{i}")
                assert inst.context["edits"] == 5 and inst.version == 6
            await c.send("a0", "submit")
            [approval] = await c.approvals(instance="a0")
            decided = await c.approve(approval.id, actor="ann")
            assert decided.instance.status == "completed"
            assert (await c.verify()).checked == 20
            with pytest.raises(errors.NotFound):
                await c.get("missing")
            with pytest.raises(errors.EventNotAccepted):
                await c.send("a1", "publish")

    asyncio.run(main())


def test_async_event_stream_follows_an_instance(server: Server, ns: str) -> None:
    async def main() -> None:
        async with AsyncClient(server.url, namespace=ns) as c:
            await c.apply(DOC)
            await c.start("doc", {"title": "T"}, id="s1")
            await c.start("doc", {"title": "T"}, id="s2")
            for k in range(3):
                await c.send("s1", "edit", {"text": str(k)})
                await c.send("s2", "edit", {"text": str(k)})
            seen = []
            async for ev in c.events(instance="s1"):
                seen.append(ev)
                if ev.kind == "transition" and ev.version == 4:
                    break
            assert {e.instance for e in seen} == {"s1"}
            positions = [e.position for e in seen]
            assert positions == sorted(positions) and len(set(positions)) == len(positions)
            assert [e.version for e in seen if e.kind == "transition"] == [2, 3, 4]

    asyncio.run(main())
