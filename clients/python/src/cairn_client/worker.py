"""A worker: decorated Python functions that do the tasks Cairn's states enqueue.

::

    worker = Worker("http://127.0.0.1:7878", queue="agents", concurrency=4)

    @worker.task("plan")                 # the state's task action
    def plan(task: TaskContext) -> dict:
        return {"plan": make_plan(task.input["request"])}

    @worker.task("review")
    async def review(task: TaskContext) -> dict:
        ...

    worker.run()                         # until SIGINT/SIGTERM

The worker claims tasks of the queues its handlers name (long polls, at most
``concurrency`` running at once), keeps each lease alive with heartbeats while the
handler runs, and reports the outcome: the return value completes the attempt; an
exception fails it as retryable (the state's retry policy decides what happens next),
:class:`PermanentError` fails it for good. Outcomes are reported in batches: every
outcome that finishes while a report is on its way goes in the next one, a single
request and a single unit of work on the server (``POST /v1/tasks/report``), so a busy
worker's handlers never wait in line for commits of their own. Sync handlers run on
their own threads, async ones on the worker's event loop.

When a heartbeat learns the task is no longer this attempt's (its state was left, or the
lease lapsed and another worker took it), ``task.lost`` turns True and an async handler
is cancelled; its result would be refused, so none is sent.

Shutdown: the first SIGINT/SIGTERM (or :meth:`Worker.stop`) stops claiming and lets
running tasks finish for up to ``shutdown_timeout`` seconds; the second (or
``stop(abort=True)``), or the timeout, fails what is still running as retryable so
another worker takes it at once instead of after the lease.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set, Tuple, TypeVar, Union

from . import errors
from ._models import JSON, Claimed, Outcome, OutcomeReport
from ._shared import backoff
from .aio import AsyncClient

log = logging.getLogger("cairn_client.worker")

F = TypeVar("F", bound=Callable[..., Any])

MAX_ERROR = 8 * 1024


class PermanentError(Exception):
    """Raise from a handler to fail the attempt without a retry: ``task.failed`` is
    delivered to the instance at once."""


@dataclass
class Result:
    """Return this from a handler to report token and cost figures with the output."""

    output: JSON
    tokens: Optional[int] = None
    cost: Optional[float] = None


class TaskContext:
    """A claimed task, as its handler sees it."""

    def __init__(self, task: Claimed, worker: str) -> None:
        self.task = task
        self.worker = worker
        self.tokens: Optional[int] = None
        self.cost: Optional[float] = None
        self._lost = threading.Event()

    @property
    def input(self) -> JSON:
        return self.task.input

    @property
    def id(self) -> str:
        return self.task.id

    @property
    def attempt(self) -> int:
        return self.task.attempt

    @property
    def action(self) -> str:
        return self.task.action

    @property
    def queue(self) -> str:
        return self.task.queue

    @property
    def instance(self) -> str:
        return self.task.instance

    @property
    def state(self) -> str:
        return self.task.state

    @property
    def namespace(self) -> str:
        return self.task.namespace

    @property
    def idempotency_key(self) -> str:
        """``<task id>:<attempt>``: the key for this attempt's own side effects."""
        return self.task.idempotency_key

    @property
    def lost(self) -> bool:
        """True once this attempt no longer holds the task (cancelled, or reclaimed after
        its lease lapsed): stop, nothing more will be accepted from it."""
        return self._lost.is_set()

    def wait_lost(self, timeout: Optional[float] = None) -> bool:
        """Sleeps up to ``timeout`` seconds, returning early (True) if the task is lost."""
        return self._lost.wait(timeout)

    def usage(self, tokens: Optional[int] = None, cost: Optional[float] = None) -> None:
        """Adds token and cost figures, reported with the outcome."""
        if tokens is not None:
            self.tokens = (self.tokens or 0) + int(tokens)
        if cost is not None:
            self.cost = (self.cost or 0.0) + float(cost)


Handler = Callable[[TaskContext], Union[JSON, Awaitable[JSON]]]


@dataclass
class _Outcome:
    ok: bool
    output: JSON = None
    error: str = ""
    retryable: bool = True


class Worker:
    """Claims and runs tasks with decorated handlers; see the module's documentation.

    ``client`` is an :class:`AsyncClient`, or a server URL (``CAIRN_SERVER`` when None)
    for a client the worker makes with ``token`` and ``namespace``. ``queue`` is the
    default queue of handlers that name none. ``lease`` is the lease asked for (the
    task's ``timeout`` may shorten it), renewed every third of it.
    """

    def __init__(
        self,
        client: Union[AsyncClient, str, None] = None,
        *,
        queue: str = "default",
        name: Optional[str] = None,
        concurrency: int = 4,
        lease: float = 30.0,
        poll_wait: float = 5.0,
        shutdown_timeout: float = 30.0,
        token: Optional[str] = None,
        namespace: str = "default",
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if lease < 0.3:
            raise ValueError("lease must be at least 0.3 seconds")
        self._client = client if isinstance(client, AsyncClient) else None
        self._url = client if isinstance(client, str) else None
        self._token = token
        self._namespace = namespace
        self.queue = queue
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.concurrency = concurrency
        self.lease = lease
        self.poll_wait = poll_wait
        self.shutdown_timeout = shutdown_timeout
        self._handlers: Dict[Tuple[str, str], Handler] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stopping: Optional[asyncio.Event] = None
        self._aborting: Optional[asyncio.Event] = None
        self._stop_early: Optional[bool] = None
        self.completed = 0
        self.failed = 0
        self.lost = 0

    # Registration

    def task(self, action: Optional[str] = None, *, queue: Optional[str] = None) -> Callable[[F], F]:
        """Registers the decorated function for tasks with this ``action`` (default: the
        function's name; ``"*"`` takes every action of the queue not otherwise handled)
        on ``queue`` (default: the worker's)."""

        def register(fn: F) -> F:
            key = (queue or self.queue, action or fn.__name__)
            if key in self._handlers:
                raise ValueError(f"a handler for action {key[1]!r} on queue {key[0]!r} exists already")
            self._handlers[key] = fn
            return fn

        return register

    @property
    def queues(self) -> List[str]:
        return sorted({q for q, _ in self._handlers})

    def _handler(self, queue: str, action: str) -> Optional[Handler]:
        return self._handlers.get((queue, action)) or self._handlers.get((queue, "*"))

    # Running

    def run(self, *, max_tasks: Optional[int] = None, handle_signals: bool = True) -> int:
        """Runs until stopped (or until ``max_tasks`` tasks were claimed and finished);
        returns the number of tasks handled."""
        return asyncio.run(self.run_async(max_tasks=max_tasks, handle_signals=handle_signals))

    def stop(self, *, abort: bool = False) -> None:
        """Stops claiming; with ``abort``, also gives up running tasks (failed as
        retryable). Safe to call from any thread or a handler."""
        loop = self._loop
        if loop is None:
            self._stop_early = abort or bool(self._stop_early)
            return

        def go() -> None:
            assert self._stopping is not None and self._aborting is not None
            self._stopping.set()
            if abort:
                self._aborting.set()

        try:
            loop.call_soon_threadsafe(go)
        except RuntimeError:
            pass  # the loop has ended: nothing is running

    def _on_signal(self) -> None:
        assert self._stopping is not None
        if self._stopping.is_set():
            log.warning("worker %s: stopping now; running tasks are failed as retryable", self.name)
            self.stop(abort=True)
        else:
            log.info("worker %s: stopping; running tasks may finish (signal again to abort)", self.name)
            self.stop()

    async def run_async(self, *, max_tasks: Optional[int] = None, handle_signals: bool = False) -> int:
        """The worker on the running event loop; see :meth:`run`."""
        if not self._handlers:
            raise ValueError("no handlers: decorate functions with @worker.task(...) first")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stopping = asyncio.Event()
        self._aborting = asyncio.Event()
        if self._stop_early is not None:
            self._stopping.set()
            if self._stop_early:
                self._aborting.set()
        signals: List[signal.Signals] = []
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, self._on_signal)
                    signals.append(sig)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass  # not the main thread, or not supported here
        client = self._client or AsyncClient(self._url, token=self._token, namespace=self._namespace)
        inflight: Set["asyncio.Task[None]"] = set()
        claimed = 0
        self._reports = _Reports(client, self.name)
        reports = loop.create_task(self._reports.run())
        try:
            failures = 0
            while not self._stopping.is_set():
                if max_tasks is not None and claimed >= max_tasks:
                    break
                free = self.concurrency - len(inflight)
                if free <= 0:
                    await _first(set(inflight), self._stopping)
                    continue
                batch = free if max_tasks is None else min(free, max_tasks - claimed)
                try:
                    got = await self._claim(client, batch)
                except (errors.TransportError, errors.Unavailable, errors.ServerError) as e:
                    delay = backoff(failures, base=0.5, cap=5.0)
                    failures += 1
                    log.warning("worker %s: claim failed (%s); retrying in %.1fs", self.name, e, delay)
                    await _sleep_unless(delay, self._stopping)
                    continue
                if got is None:
                    break  # aborted
                failures = 0
                for task in got:
                    claimed += 1
                    t = loop.create_task(self._run_one(client, task))
                    inflight.add(t)
                    t.add_done_callback(inflight.discard)
            await self._drain(inflight)
        finally:
            reports.cancel()
            await asyncio.gather(reports, return_exceptions=True)
            for sig in signals:
                loop.remove_signal_handler(sig)
            if self._client is None:
                await client.aclose()
            self._loop = None
        return claimed

    async def _claim(self, client: AsyncClient, batch: int) -> Optional[List[Claimed]]:
        """One long poll, given up (None) when the worker is aborted meanwhile. A graceful
        stop lets it finish, so a task handed out in its last instant is still run."""
        assert self._aborting is not None
        claim = asyncio.ensure_future(
            client.claim(self.queues, worker=self.name, batch=batch, wait=self.poll_wait, lease=self.lease)
        )
        abort = asyncio.ensure_future(self._aborting.wait())
        try:
            await asyncio.wait({claim, abort}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            abort.cancel()
        if not claim.done():
            claim.cancel()
            return None
        return claim.result()

    async def _drain(self, inflight: Set["asyncio.Task[None]"]) -> None:
        """Waits for running tasks; gives them up when aborted or, once stopping, after
        ``shutdown_timeout``."""
        assert self._stopping is not None and self._aborting is not None
        deadline: Optional[float] = None
        while inflight and not self._aborting.is_set():
            if self._stopping.is_set() and deadline is None:
                deadline = time.monotonic() + self.shutdown_timeout
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                log.warning("worker %s: %d task(s) still running after %.0fs; giving them up",
                            self.name, len(inflight), self.shutdown_timeout)
                break
            waiters = {asyncio.ensure_future(self._aborting.wait())}
            if deadline is None:
                waiters.add(asyncio.ensure_future(self._stopping.wait()))
            try:
                await asyncio.wait(set(inflight) | waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
        for t in list(inflight):
            t.cancel()
        if inflight:
            await asyncio.gather(*inflight, return_exceptions=True)

    async def _run_one(self, client: AsyncClient, task: Claimed) -> None:
        try:
            await self._run(client, task)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one task's trouble must not end the worker
            log.exception("task %s attempt %d: the worker could not finish it; the lease will lapse",
                          task.id, task.attempt)

    async def _run(self, client: AsyncClient, task: Claimed) -> None:
        ctx = TaskContext(task, self.name)
        handler = self._handler(task.queue, task.action)
        work: Optional[asyncio.Future[JSON]] = None
        beats = asyncio.ensure_future(self._heartbeats(client, ctx, lambda: work))
        try:
            if handler is None:
                outcome = _Outcome(
                    ok=False,
                    error=f"worker {self.name} has no handler for action {task.action!r} on queue {task.queue!r}",
                    retryable=False,
                )
            else:
                work = self._start(handler, ctx)
                try:
                    await asyncio.wait({work})
                except asyncio.CancelledError:
                    # The worker gives the task up (abort, or the shutdown timeout).
                    work.cancel()
                    ctx._lost.set()
                    await self._report(client, ctx, _Outcome(
                        ok=False, error=f"worker {self.name} stopped before the task finished"
                    ), give_up_after=3.0)
                    raise
                outcome = _outcome(work, ctx)
        finally:
            beats.cancel()
        if ctx.lost:
            self.lost += 1
            log.warning("task %s attempt %d: no longer this worker's; its result is dropped",
                        task.id, task.attempt)
            return
        await self._report(client, ctx, outcome, give_up_after=max(self.lease, 30.0))

    def _start(self, handler: Handler, ctx: TaskContext) -> "asyncio.Future[JSON]":
        loop = asyncio.get_running_loop()
        if inspect.iscoroutinefunction(handler):
            return loop.create_task(handler(ctx))
        # A daemon thread per task: a handler that never returns cannot keep the process
        # alive after the worker has given it up.
        fut: asyncio.Future[JSON] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if fut.done():
                return
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

        def body() -> None:
            try:
                value = handler(ctx)
                if inspect.isawaitable(value):
                    value = asyncio.run(_awaited(value))
            except BaseException as e:  # noqa: BLE001 - carried to the loop as the outcome
                _call_soon(loop, settle, False, e)
            else:
                _call_soon(loop, settle, True, value)

        threading.Thread(target=body, name=f"cairn-task-{ctx.id}", daemon=True).start()
        return fut

    async def _heartbeats(
        self, client: AsyncClient, ctx: TaskContext, work: Callable[[], Optional["asyncio.Future[JSON]"]]
    ) -> None:
        every = self.lease / 3
        while True:
            await asyncio.sleep(every)
            try:
                await client.heartbeat(ctx.id, ctx.attempt, lease=self.lease)
            except (errors.Conflict, errors.NotFound) as e:
                log.warning("task %s attempt %d lost: %s", ctx.id, ctx.attempt, e.detail)
                ctx._lost.set()
                w = work()
                if w is not None:
                    w.cancel()
                return
            except errors.CairnError as e:
                # The server may be restarting: keep working, keep trying.
                log.warning("task %s: heartbeat failed (%s); still working", ctx.id, e)

    async def _report(self, client: AsyncClient, ctx: TaskContext, o: _Outcome, give_up_after: float) -> None:
        deadline = time.monotonic() + give_up_after
        while True:
            if o.ok:
                outcome = Outcome.completed(ctx.id, ctx.attempt, o.output, tokens=ctx.tokens, cost=ctx.cost)
            else:
                outcome = Outcome.failed(
                    ctx.id, ctx.attempt, o.error or "", retryable=o.retryable, tokens=ctx.tokens, cost=ctx.cost
                )
            verdict = await self._reports.send(outcome, deadline)
            if verdict is None:
                log.error("task %s attempt %d: could not report; the lease will lapse and "
                          "the task will be retried", ctx.id, ctx.attempt)
                return
            if verdict.applied:
                if o.ok:
                    self.completed += 1
                else:
                    self.failed += 1
                return
            problem = verdict.problem or {}
            status = int(problem.get("status") or 0)
            if o.ok and status in (400, 413):
                # The server will not take this output: say so, rather than retry forever.
                o = _Outcome(ok=False, error=f"the output was refused: {problem.get('detail')}", retryable=False)
                continue
            self.lost += 1
            log.warning("task %s attempt %d: outcome refused: %s", ctx.id, ctx.attempt, problem.get("detail"))
            return


class _Reports:
    """Outcomes of a worker's tasks, reported together: whatever finishes while a report
    is on its way goes in the next one. A report that does not reach the server is sent
    again (an outcome that had applied is answered as applied the second time) until each
    outcome's deadline."""

    def __init__(self, client: AsyncClient, name: str) -> None:
        self._client = client
        self._name = name
        self._waiting: List[Tuple[Outcome, float, "asyncio.Future[Optional[OutcomeReport]]"]] = []
        self._ready = asyncio.Event()

    async def send(self, outcome: Outcome, deadline: float) -> Optional[OutcomeReport]:
        """The outcome's verdict, or None when it could not be reported by ``deadline``."""
        fut: asyncio.Future[Optional[OutcomeReport]] = asyncio.get_running_loop().create_future()
        self._waiting.append((outcome, deadline, fut))
        self._ready.set()
        return await fut

    async def run(self) -> None:
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                while self._waiting:
                    batch, self._waiting = self._waiting[:1000], self._waiting[1000:]
                    await self._report(batch)
        finally:
            for _, _, fut in self._waiting:
                if not fut.done():
                    fut.set_result(None)

    async def _report(self, batch: List[Tuple[Outcome, float, "asyncio.Future[Optional[OutcomeReport]]"]]) -> None:
        tries = 0
        try:
            while batch:
                try:
                    reported = await self._client.report([o for o, _, _ in batch])
                except (errors.TransportError, errors.Unavailable, errors.ServerError) as e:
                    now = time.monotonic()
                    for _, deadline, fut in batch:
                        if deadline <= now and not fut.done():
                            fut.set_result(None)
                    batch = [b for b in batch if not b[2].done()]
                    if batch:
                        log.warning("worker %s: reporting %d outcome(s) failed (%s); retrying",
                                    self._name, len(batch), e)
                        await asyncio.sleep(backoff(tries, base=0.2, cap=2.0))
                        tries += 1
                    continue
                except errors.ApiError as e:
                    # Refused whole (a body over the server's limit, say): halves go
                    # alone, and an outcome refused alone gets the problem as its verdict.
                    if len(batch) > 1:
                        half = len(batch) // 2
                        await self._report(batch[:half])
                        await self._report(batch[half:])
                    else:
                        problem = {"type": e.type, "status": e.status, "detail": e.detail}
                        o = batch[0][0]
                        batch[0][2].set_result(OutcomeReport(o.task, o.attempt, False, False, False, None, problem))
                    return
                for (_, _, fut), verdict in zip(batch, reported.outcomes):
                    if not fut.done():
                        fut.set_result(verdict)
                return
        finally:
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_result(None)


def _outcome(work: "asyncio.Future[JSON]", ctx: TaskContext) -> _Outcome:
    if work.cancelled():
        return _Outcome(ok=False, error="the handler was cancelled")
    exc = work.exception()
    if exc is None:
        value = work.result()
        tokens = cost = None
        if isinstance(value, Result):
            value, tokens, cost = value.output, value.tokens, value.cost
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as e:
            return _Outcome(ok=False, error=f"the handler's result is not JSON: {e}", retryable=False)
        ctx.usage(tokens, cost)
        return _Outcome(ok=True, output=value)
    if isinstance(exc, PermanentError):
        return _Outcome(ok=False, error=_describe(exc), retryable=False)
    log.warning("handler failed:\n%s", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return _Outcome(ok=False, error=_describe(exc), retryable=True)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_ERROR]


async def _awaited(value: Awaitable[JSON]) -> JSON:
    return await value


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        pass  # the loop is closed: the worker has already given the task up


async def _first(tasks: Set["asyncio.Task[None]"], event: asyncio.Event) -> None:
    stop = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait(tasks | {stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()


async def _sleep_unless(delay: float, event: asyncio.Event) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout=delay)
    except asyncio.TimeoutError:
        pass
