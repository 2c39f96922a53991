"""The Worker against a real server: handlers sync and async, retries with the right
retryable flag, concurrency, lost tasks, graceful and abrupt shutdown, and a worker
SIGKILLed mid-task whose task another worker reclaims and completes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from cairn_client import Client, PermanentError, Result, TaskContext, Worker
from conftest import Server, jobs_machine


def setup(client: Client, ns: str, **kw: Any) -> str:
    queue = f"q-{ns}"
    client.apply(jobs_machine(queue, **kw))
    return queue


def attempts(client: Client, id: str) -> List[Dict[str, Any]]:
    [task] = client.export(id)["tasks"]
    return list(task["attempts"])


def run_in_thread(worker: Worker, **kw: Any) -> threading.Thread:
    t = threading.Thread(target=lambda: worker.run(handle_signals=False, **kw), daemon=True)
    t.start()
    return t


def test_sync_and_async_handlers_complete_tasks_with_usage(server: Server, client: Client, ns: str) -> None:
    queue = setup(client, ns)
    other = f"{queue}-b"
    client.apply(jobs_machine(other).replace("machine: jobs", "machine: jobs2"))
    w = Worker(server.url, queue=queue, name="w-sync-async", namespace=ns, lease=2)

    @w.task("work")
    def work(task: TaskContext) -> Result:
        assert task.idempotency_key == f"{task.id}:{task.attempt}"
        return Result({"doubled": task.input["n"] * 2, "by": task.worker}, tokens=120, cost=0.25)

    @w.task("work", queue=other)
    async def work_async(task: TaskContext) -> Dict[str, Any]:
        await asyncio.sleep(0.01)
        task.usage(tokens=7)
        return {"tripled": task.input["n"] * 3}

    for i in range(3):
        client.start("jobs", {"n": i}, id=f"s{i}")
        client.start("jobs2", {"n": i}, id=f"a{i}")
    assert w.run(max_tasks=6, handle_signals=False) == 6
    for i in range(3):
        s = client.get(f"s{i}")
        assert s.status == "completed" and s.context["result"]["doubled"] == 2 * i
        a = client.get(f"a{i}")
        assert a.status == "completed" and a.context["result"]["tripled"] == 3 * i
    usage = client.export("s1")["usage"]
    assert (usage["attempts"], usage["tokens"], usage["cost"]) == (1, 120, 0.25)
    assert client.export("a1")["usage"]["tokens"] == 7
    assert attempts(client, "s0")[0]["worker"] == "w-sync-async"
    assert (w.completed, w.failed, w.lost) == (6, 0, 0)


def test_exceptions_are_retried_and_permanent_errors_are_not(server: Server, client: Client, ns: str) -> None:
    queue = setup(client, ns, max_attempts=3)
    calls: Dict[str, int] = {}
    w = Worker(server.url, queue=queue, namespace=ns, lease=2)

    @w.task("work")
    def work(task: TaskContext) -> Dict[str, Any]:
        calls[task.instance] = calls.get(task.instance, 0) + 1
        if task.input["mode"] == "flaky" and task.attempt < 3:
            raise ConnectionError(f"upstream down (attempt {task.attempt})")
        if task.input["mode"] == "bad":
            raise PermanentError("the request makes no sense")
        if task.input["mode"] == "broken":
            raise RuntimeError("always")
        return {"ok": True}

    client.start("jobs", {"mode": "flaky"}, id="flaky")
    client.start("jobs", {"mode": "bad"}, id="bad")
    client.start("jobs", {"mode": "broken"}, id="broken")
    t = run_in_thread(w)
    try:
        for id in ("flaky", "bad", "broken"):
            client.wait(id, timeout=30)
    finally:
        w.stop()
        t.join(30)
    assert client.get("flaky").status == "completed" and calls["flaky"] == 3
    flaky = attempts(client, "flaky")
    assert [a["outcome"] for a in flaky] == ["failed", "failed", "completed"]
    assert flaky[0]["error"] == "ConnectionError: upstream down (attempt 1)"

    bad = client.get("bad")
    assert bad.status == "failed" and calls["bad"] == 1, "not retried"
    assert bad.context["error"] == "PermanentError: the request makes no sense"

    broken = client.get("broken")
    assert broken.status == "failed" and calls["broken"] == 3, "retried until attempts ran out"
    assert broken.context["error"] == "RuntimeError: always"
    assert not t.is_alive()


def test_concurrency_is_limited_and_reached(server: Server, client: Client, ns: str) -> None:
    queue = setup(client, ns)
    running = 0
    peak = 0
    lock = threading.Lock()
    w = Worker(server.url, queue=queue, namespace=ns, concurrency=3, lease=2)

    @w.task("work")
    def work(task: TaskContext) -> Dict[str, Any]:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.3)
        with lock:
            running -= 1
        return {}

    for i in range(9):
        client.start("jobs", {}, id=f"c{i}")
    assert w.run(max_tasks=9, handle_signals=False) == 9
    assert peak == 3
    assert all(client.get(f"c{i}").status == "completed" for i in range(9))


def test_a_task_without_a_handler_fails_for_good(server: Server, client: Client, ns: str) -> None:
    queue = setup(client, ns)
    client.apply(jobs_machine(queue).replace("machine: jobs", "machine: other").replace("action: work", "action: mystery"))
    w = Worker(server.url, queue=queue, name="w-nohandler", namespace=ns)

    @w.task("work")
    def work(task: TaskContext) -> Dict[str, Any]:
        return {}

    client.start("other", {}, id="m1")
    w.run(max_tasks=1, handle_signals=False)
    m = client.get("m1")
    assert m.status == "failed"
    assert "no handler for action 'mystery'" in m.context["error"]
    assert len(attempts(client, "m1")) == 1


def test_a_cancelled_task_is_lost_and_its_async_handler_cancelled(server: Server, client: Client, ns: str) -> None:
    queue = setup(client, ns)
    w = Worker(server.url, queue=queue, namespace=ns, lease=0.6)
    started = threading.Event()
    cancelled = threading.Event()

    @w.task("work")
    async def work(task: TaskContext) -> Dict[str, Any]:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    client.start("jobs", {}, id="x1")
    t = run_in_thread(w, max_tasks=1)
    assert started.wait(10)
    client.send("x1", "stop")  # leaves the state: the task is cancelled
    t.join(10)
    assert not t.is_alive() and cancelled.is_set()
    assert w.lost == 1 and w.completed == 0
    assert client.get("x1").configuration == ["stopped"]
    assert [a["outcome"] for a in attempts(client, "x1")] == ["cancelled"]


def test_stop_lets_running_tasks_finish_and_abort_hands_them_back(server: Server, client: Client, ns: str) -> None:
    queue = setup(client, ns)
    w = Worker(server.url, queue=queue, namespace=ns, lease=5)
    started = threading.Event()

    @w.task("work")
    def work(task: TaskContext) -> Dict[str, Any]:
        started.set()
        if task.input.get("slow"):
            task.wait_lost(30)
        else:
            time.sleep(0.5)
        return {"finished": True}

    client.start("jobs", {}, id="g1")
    t = run_in_thread(w)
    assert started.wait(10)
    w.stop()
    t.join(10)
    assert not t.is_alive()
    assert client.get("g1").context["result"]["finished"] is True, "the running task finished"

    client.start("jobs", {"slow": True}, id="g2")
    started.clear()
    w2 = Worker(server.url, queue=queue, name="w-abort", namespace=ns, lease=5)
    w2.task("work")(work)
    t2 = run_in_thread(w2)
    assert started.wait(10)
    began = time.monotonic()
    w2.stop(abort=True)
    t2.join(10)
    assert not t2.is_alive() and time.monotonic() - began < 5, "abort does not wait for the task"
    [first] = attempts(client, "g2")[:1]
    assert first["outcome"] == "failed" and "stopped before the task finished" in first["error"]
    # Handed back at once (not after the 5 s lease): the retry is due after the 50 ms backoff.
    [task] = client.tasks(instance="g2")
    assert task.status == "pending" and task.attempt == 1


WORKER_SCRIPT = """
import sys, time, pathlib
from cairn_client import Worker

url, ns, queue, marker = sys.argv[1:5]
w = Worker(url, queue=queue, name="doomed", namespace=ns, lease=1.0)

@w.task("work")
def work(task):
    pathlib.Path(marker).write_text(str(task.attempt))
    time.sleep(60)
    return {"by": "doomed"}

w.run()
"""


def _spawn_worker(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER_SCRIPT))
    return subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_a_worker_killed_mid_task_is_replaced_and_the_task_completed_by_another(
    server: Server, client: Client, ns: str, tmp_path: Path
) -> None:
    queue = setup(client, ns)
    client.start("jobs", {"n": 1}, id="k1")
    marker = tmp_path / "working"
    doomed = _spawn_worker(tmp_path, server.url, ns, queue, str(marker))
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert doomed.poll() is None, doomed.stderr.read().decode() if doomed.stderr else ""
            assert time.monotonic() < deadline, "the doomed worker never started its task"
            time.sleep(0.02)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
    finally:
        if doomed.poll() is None:
            doomed.kill()
    [task] = client.tasks(instance="k1")
    assert (task.status, task.attempt, task.lease_owner) == ("leased", 1, "doomed")

    rescuer = Worker(server.url, queue=queue, name="rescuer", namespace=ns, lease=1.0)

    @rescuer.task("work")
    def work(task: TaskContext) -> Dict[str, Any]:
        return {"by": task.worker, "attempt": task.attempt}

    assert rescuer.run(max_tasks=1, handle_signals=False) == 1
    k1 = client.get("k1")
    assert k1.status == "completed"
    assert (k1.context["result"]["by"], k1.context["result"]["attempt"]) == ("rescuer", 2)
    tried = attempts(client, "k1")
    assert [(a["worker"], a["outcome"]) for a in tried] == [("doomed", "expired"), ("rescuer", "completed")]
    assert [t.event for t in client.history("k1") if t.kind == "event"].count("task.done") == 1
    assert client.verify("k1").ok


def test_sigterm_stops_a_worker_process_gracefully(server: Server, client: Client, ns: str, tmp_path: Path) -> None:
    queue = setup(client, ns)
    client.start("jobs", {}, id="t1")
    script = tmp_path / "graceful.py"
    script.write_text(textwrap.dedent("""
        import sys, time, pathlib
        from cairn_client import Worker
        url, ns, queue, marker = sys.argv[1:5]
        w = Worker(url, queue=queue, namespace=ns, lease=2.0, poll_wait=1.0)

        @w.task("work")
        def work(task):
            pathlib.Path(marker).write_text("started")
            time.sleep(1.0)
            return {"graceful": True}

        print(w.run(), flush=True)
    """))
    marker = tmp_path / "started"
    p = subprocess.Popen([sys.executable, str(script), server.url, ns, queue, str(marker)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert p.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err.decode()
    assert out.decode().strip() == "1"
    assert client.get("t1").context["result"]["graceful"] is True
    assert os.path.exists(marker)
