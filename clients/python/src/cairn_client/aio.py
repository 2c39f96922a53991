"""The asynchronous client: :class:`cairn_client.Client`'s methods, awaitable."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, AsyncIterator, Callable, Dict, List, Mapping, Optional, Union

import httpx

from . import _calls as c
from . import errors
from ._calls import Call, Definition, T
from ._models import (
    JSON,
    Applied,
    Approval,
    Checkpoint,
    Claimed,
    CreatedToken,
    Decided,
    Failed,
    Instance,
    InstancePage,
    LogEvent,
    Machine,
    Outcome,
    Reported,
    Sent,
    Task,
    Token,
    Transition,
    VerifyReport,
)
from ._shared import (
    SseDecoder,
    backoff,
    partial_path,
    problem,
    read,
    request_args,
    resume_headers,
    retriable,
    settings,
    stream_params,
)


class AsyncClient:
    """A Cairn server, over HTTP.

    ``url`` defaults to ``CAIRN_SERVER`` (else ``http://127.0.0.1:7878``) and ``token`` to
    ``CAIRN_TOKEN``. Every call is in ``namespace``. Reads, keyed sends and other calls
    that are safe to repeat are retried ``retries`` times when the connection fails or
    the server is busy; anything else raises :class:`~cairn_client.errors.TransportError`
    at once. Use it as an async context manager, or call :meth:`aclose`.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        token: Optional[str] = None,
        namespace: str = "default",
        timeout: float = 60.0,
        retries: int = 3,
        http: Optional[httpx.AsyncClient] = None,
    ) -> None:
        self.url, headers = settings(url, token)
        self.namespace = namespace
        self.retries = retries
        self._own = http is None
        self._http = http or httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)
        if not self._own:
            self._http.headers.update(headers)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own:
            await self._http.aclose()

    async def call(self, call: Call[T], *, timeout: Optional[float] = None) -> T:
        """Carries out one :class:`Call` (the methods below are all made of this)."""
        attempt = 0
        while True:
            try:
                args = request_args(call, self.namespace)
                if timeout is not None:
                    args["timeout"] = timeout
                try:
                    response = await self._http.request(**args)
                except httpx.TransportError as e:
                    raise errors.TransportError(f"{call.method} {call.path}: {e}") from e
                return read(call, response)
            except errors.CairnError as e:
                if not (call.safe and attempt < self.retries and retriable(e)):
                    raise
            await asyncio.sleep(backoff(attempt))
            attempt += 1

    # Machines

    async def apply(self, definition: Definition, *, format: Optional[str] = None) -> Applied:
        """Applies a definition: a mapping, YAML/TOML/JSON text, or a file path."""
        return await self.call(c.apply(definition, format))

    async def machines(self) -> List[Machine]:
        return await self.call(c.machines())

    async def machine(self, name: str, version: Optional[int] = None) -> Machine:
        """The latest version (or ``version``), with its definition."""
        return await self.call(c.machine(name, version))

    async def delete_machine(self, name: str, version: int) -> None:
        """Deletes a version no instance runs on; its number is never given again."""
        await self.call(c.delete_machine(name, version))

    async def repair(self, *, dry_run: bool = False) -> Dict[str, Any]:
        """Finds stored machine versions that cannot be read back and deletes those no
        instance runs on (a token scoped to ``*``): ``deleted``, ``deletable``, ``in_use``."""
        return await self.call(c.repair(dry_run))

    async def vacuum(self) -> Dict[str, Any]:
        """Reclaims free space in bounded incremental steps (a token scoped to ``*``):
        ``bytes_before``, ``bytes_after``, ``free_bytes_before``, ``free_bytes_after``,
        ``steps``, ``longest_step_ms``, ``duration_ms``."""
        return await self.call(c.vacuum())

    async def diagram(self, name: str, *, format: str = "mermaid", instance: Optional[str] = None) -> str:
        return await self.call(c.diagram(name, format, instance))

    # Instances

    async def start(
        self,
        machine: str,
        input: JSON = None,
        *,
        id: Optional[str] = None,
        version: Optional[int] = None,
        labels: Optional[Mapping[str, str]] = None,
        actor: Optional[str] = None,
        on_behalf_of: Optional[str] = None,
    ) -> Instance:
        """Starts an instance. With auth on, the recorded actor is the token's subject;
        ``actor`` or ``on_behalf_of`` is kept beside it as whom it acted for."""
        return await self.call(c.start(machine, input, id, version, labels, actor, on_behalf_of))

    async def send(
        self,
        id: str,
        event: str,
        payload: JSON = None,
        *,
        key: Optional[str] = None,
        expected_version: Optional[int] = None,
        actor: Optional[str] = None,
        reason: Optional[str] = None,
        on_behalf_of: Optional[str] = None,
    ) -> Sent:
        """Sends an event. With ``key`` the event is applied at most once, however often
        it is sent (``Sent.replayed`` tells a repeat), so it is retried on failures too."""
        return await self.call(c.send(id, event, payload, key, expected_version, actor, reason, on_behalf_of))

    async def get(self, id: str) -> Instance:
        return await self.call(c.get(id))

    async def instances(
        self,
        *,
        machine: Optional[str] = None,
        status: Optional[str] = None,
        state: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        parent: Optional[str] = None,
        limit: Optional[int] = None,
        after: Optional[str] = None,
    ) -> InstancePage:
        """One page; pass ``page.next`` as ``after`` for the next (or use
        :meth:`iter_instances`)."""
        return await self.call(c.instances(machine, status, state, labels, parent, limit, after))

    async def iter_instances(
        self,
        *,
        machine: Optional[str] = None,
        status: Optional[str] = None,
        state: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        parent: Optional[str] = None,
        page_size: int = 100,
    ) -> AsyncIterator[Instance]:
        """Every matching instance, page after page."""
        after: Optional[str] = None
        while True:
            page = await self.instances(
                machine=machine,
                status=status,
                state=state,
                labels=labels,
                parent=parent,
                limit=page_size,
                after=after,
            )
            for inst in page.instances:
                yield inst
            if page.next is None:
                return
            after = page.next

    async def delete(self, id: str) -> None:
        await self.call(c.delete(id))

    async def accepts(self, id: str) -> List[str]:
        """The events the instance accepts now."""
        return await self.call(c.accepts(id))

    async def waiting(self, id: str) -> Dict[str, Any]:
        """What the instance waits for now (see :meth:`cairn_client.Client.waiting`)."""
        return await self.call(c.waiting(id))

    async def history(
        self, id: str, *, limit: Optional[int] = None, before: Optional[int] = None
    ) -> List[Transition]:
        """The history, oldest first: all of it, or the newest ``limit`` records with a
        ``seq`` below ``before`` (page back with the first ``seq`` of a page)."""
        return await self.call(c.history(id, limit, before))

    async def checkpoints(self, id: str) -> List[Checkpoint]:
        return await self.call(c.checkpoints(id))

    async def checkpoint(self, id: str, name: str) -> Checkpoint:
        return await self.call(c.checkpoint(id, name))

    async def fork(
        self,
        id: str,
        from_: Union[int, str],
        *,
        new_id: Optional[str] = None,
        patch: JSON = None,
        actor: Optional[str] = None,
        on_behalf_of: Optional[str] = None,
    ) -> Instance:
        """A new instance from a version number or a checkpoint name of ``id``, its
        context merged with ``patch``."""
        return await self.call(c.fork(id, from_, new_id, patch, actor, on_behalf_of))

    async def pause(
        self,
        id: str,
        *,
        actor: Optional[str] = None,
        reason: Optional[str] = None,
        on_behalf_of: Optional[str] = None,
    ) -> Instance:
        return await self.call(c.lifecycle(id, "pause", actor, reason, on_behalf_of))

    async def resume(
        self,
        id: str,
        *,
        actor: Optional[str] = None,
        reason: Optional[str] = None,
        on_behalf_of: Optional[str] = None,
    ) -> Instance:
        return await self.call(c.lifecycle(id, "resume", actor, reason, on_behalf_of))

    async def cancel(
        self,
        id: str,
        *,
        actor: Optional[str] = None,
        reason: Optional[str] = None,
        on_behalf_of: Optional[str] = None,
    ) -> Instance:
        return await self.call(c.lifecycle(id, "cancel", actor, reason, on_behalf_of))

    async def export(self, id: str, *, format: str = "json") -> Any:
        """Everything about an instance: a dict for ``json``, text for ``markdown`` and
        ``jsonl``."""
        return await self.call(c.export(id, format))

    async def verify(self, id: Optional[str] = None) -> VerifyReport:
        """Replays history and compares it with the stored state (one instance, or all)."""
        return await self.call(c.verify(id))

    async def wait(
        self,
        id: str,
        until: Callable[[Instance], bool] = lambda i: i.finished,
        *,
        timeout: float = 60.0,
        interval: float = 0.05,
    ) -> Instance:
        """Polls until ``until(instance)`` holds (by default: finished); raises
        ``TimeoutError`` naming the last state seen."""
        deadline = time.monotonic() + timeout
        delay = interval
        while True:
            inst = await self.get(id)
            if until(inst):
                return inst
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"instance {id} still {inst.status} in {inst.configuration} after {timeout}s"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    # Approvals

    async def approvals(self, *, status: Optional[str] = None, instance: Optional[str] = None) -> List[Approval]:
        """Approvals; pending ones unless ``status`` says otherwise."""
        return await self.call(c.approvals(status, instance))

    async def approve(
        self,
        approval: str,
        *,
        actor: Optional[str] = None,
        reason: Optional[str] = None,
        payload: JSON = None,
        on_behalf_of: Optional[str] = None,
    ) -> Decided:
        return await self.call(c.decide(approval, True, actor, reason, payload, on_behalf_of))

    async def reject(
        self,
        approval: str,
        *,
        reason: str,
        actor: Optional[str] = None,
        payload: JSON = None,
        on_behalf_of: Optional[str] = None,
    ) -> Decided:
        return await self.call(c.decide(approval, False, actor, reason, payload, on_behalf_of))

    # Tasks

    async def tasks(
        self, *, queue: Optional[str] = None, status: Optional[str] = None, instance: Optional[str] = None
    ) -> List[Task]:
        return await self.call(c.tasks(queue, status, instance))

    async def claim(
        self,
        queues: List[str],
        *,
        worker: str,
        batch: int = 1,
        wait: float = 0.0,
        lease: Optional[float] = None,
    ) -> List[Claimed]:
        """Claims up to ``batch`` tasks, waiting up to ``wait`` seconds for one."""
        lease_ms = None if lease is None else int(lease * 1000)
        return await self.call(c.claim(queues, worker, batch, int(wait * 1000), lease_ms), timeout=wait + 30)

    async def heartbeat(self, id: str, attempt: int, *, lease: Optional[float] = None) -> Dict[str, Any]:
        return await self.call(c.heartbeat(id, attempt, None if lease is None else int(lease * 1000)))

    async def complete(
        self,
        id: str,
        attempt: int,
        output: JSON = None,
        *,
        tokens: Optional[int] = None,
        cost: Optional[float] = None,
    ) -> Task:
        return await self.call(c.complete(id, attempt, output, tokens, cost))

    async def fail(
        self,
        id: str,
        attempt: int,
        error: str,
        *,
        retryable: bool = True,
        tokens: Optional[int] = None,
        cost: Optional[float] = None,
    ) -> Failed:
        return await self.call(c.fail(id, attempt, error, retryable, tokens, cost))

    async def report(
        self,
        outcomes: List[Outcome],
        *,
        claim: Optional[List[str]] = None,
        worker: Optional[str] = None,
        batch: int = 1,
        wait: float = 0.0,
        lease: Optional[float] = None,
    ) -> Reported:
        """Reports many outcomes in one request and one unit of work, each applied or
        refused on its own (see :class:`Reported`), and, with ``claim`` (queues) and
        ``worker``, claims up to ``batch`` next tasks in the same round trip, waiting up
        to ``wait`` seconds for one."""
        lease_ms = None if lease is None else int(lease * 1000)
        return await self.call(
            c.report(list(outcomes), claim, worker, batch, int(wait * 1000), lease_ms), timeout=wait + 30
        )

    # Triggers, schedules, operations

    async def add_trigger(self, trigger: Mapping[str, Any]) -> Dict[str, Any]:
        return await self.call(c.add_named("triggers", trigger))

    async def triggers(self) -> List[Dict[str, Any]]:
        return await self.call(c.list_named("triggers"))

    async def remove_trigger(self, name: str) -> None:
        await self.call(c.remove_named("triggers", name))

    async def add_schedule(self, schedule: Mapping[str, Any]) -> Dict[str, Any]:
        return await self.call(c.add_named("schedules", schedule))

    async def schedules(self) -> List[Dict[str, Any]]:
        return await self.call(c.list_named("schedules"))

    async def remove_schedule(self, name: str) -> None:
        await self.call(c.remove_named("schedules", name))

    async def stats(self) -> Dict[str, Any]:
        return await self.call(c.stats())

    async def tick(self) -> Dict[str, Any]:
        """Fires due timers and schedules, reclaims expired leases, delivers the outbox."""
        return await self.call(c.tick())

    async def create_token(
        self, role: str, namespaces: List[str], *, name: Optional[str] = None
    ) -> CreatedToken:
        """Creates a token no stronger and no wider than this client's (admin); ``name`` is
        its subject. The secret is in the answer only."""
        return await self.call(c.create_token(role, namespaces, name))

    async def tokens(self) -> List[Token]:
        """The tokens within this client's namespaces (admin)."""
        return await self.call(c.tokens())

    async def revoke_token(self, id: str) -> None:
        await self.call(c.revoke_token(id))

    async def backup(self, path: Union[str, "os.PathLike[str]"]) -> int:
        """Downloads an online backup of every namespace (a token scoped to ``*``) into
        ``path`` on this machine; its size in bytes. Written to ``path.partial`` first."""
        partial, final = partial_path(path)
        async with self._http.stream(
            "POST",
            "/v1/backup",
            params={"namespace": self.namespace},
            headers={"Content-Type": "application/json"},
            content=b"{}",
            timeout=httpx.Timeout(10.0, read=300.0),
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                raise problem(response)
            size = 0
            try:
                with open(partial, "wb") as out:
                    async for chunk in response.aiter_bytes():
                        out.write(chunk)
                        size += len(chunk)
                os.replace(partial, final)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        return size

    async def health(self) -> Dict[str, Any]:
        return await self.call(c.health())

    # The event stream

    async def events(
        self,
        *,
        after: Optional[int] = None,
        machine: Optional[str] = None,
        instance: Optional[str] = None,
        reconnect: bool = True,
        max_delay: float = 5.0,
    ) -> AsyncIterator[LogEvent]:
        """Every log entry after position ``after`` (from the beginning when None), in
        commit order, forever. A dropped connection or a restarted server is resumed
        from the last entry delivered (``Last-Event-ID``), so nothing is missed or
        repeated; with ``reconnect=False`` the failure is raised instead. Where log
        retention removed entries not yet delivered, a ``reset`` event says so first."""
        last = after
        failures = 0
        while True:
            try:
                async with self._http.stream(
                    "GET",
                    "/v1/events",
                    params=stream_params(self.namespace, machine, instance),
                    headers=resume_headers(last),
                    timeout=httpx.Timeout(10.0, read=60.0),
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise problem(response)
                    failures = 0
                    decoder = SseDecoder()
                    async for line in response.aiter_lines():
                        ev = decoder.feed(line)
                        if ev is not None:
                            last = ev.position
                            yield ev
            except httpx.TransportError as e:
                if not reconnect:
                    raise errors.TransportError(f"event stream: {e}") from e
            except errors.ApiError as e:
                if not (reconnect and retriable(e)):
                    raise
            if not reconnect:
                raise errors.TransportError("event stream: the server closed it")
            await asyncio.sleep(min(max_delay, backoff(failures)))
            failures += 1
