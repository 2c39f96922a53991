"""examples/coding_agent.py end to end: the Python agent drives the seed 001 machine
while a human approves and rejects in the CLI; the agent is SIGKILLed while it waits
for the human and picks the run up again with ``--id``."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from typing import IO, Callable, List

from cairn_client import Approval, Client
from conftest import EXAMPLES, Server


class Agent:
    def __init__(self, server: Server, ns: str, id: str) -> None:
        self.lines: List[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "coding_agent.py"), "--server", server.url,
             "--namespace", ns, "--id", id, "--request", "add login"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, out: IO[str]) -> None:
        for line in out:
            self.lines.append(line.rstrip())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def pending(client: Client, id: str, state: str, agent: Agent, after: str = "") -> Approval:
    deadline = time.monotonic() + 60
    while True:
        for a in client.approvals(instance=id):
            if a.state == state and a.id != after:
                return a
        assert agent.proc.poll() is None, "\n".join(agent.lines)
        assert time.monotonic() < deadline, f"no approval for {state}: " + "\n".join(agent.lines)
        time.sleep(0.05)


def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_python_agent_and_a_human_in_the_cli_take_seed_001_to_completion(
    server: Server, client: Client, ns: str
) -> None:
    cli = ["--namespace", ns]
    agent = Agent(server, ns, "ca")
    try:
        first = pending(client, "ca", "plan_review", agent)
        assert client.get("ca").context["plan"].startswith("1. add a route for: add login")
        server.cli(*cli, "reject", "ca", "--actor", "ann", "--reason", "say how sessions expire")
        second = pending(client, "ca", "plan_review", agent, after=first.id)
        assert "address review: say how sessions expire" in client.get("ca").context["plan"]
        server.cli(*cli, "approve", "ca", "--actor", "ann", "--reason", "good")

        # The first implementation has no tests: the agent's test run fails and sends it
        # back; the second one passes and waits for a human again.
        pending(client, "ca", "implementation_review", agent)
        assert client.get("ca").context["attempts"] == 1
        assert client.get("ca").context["implementation"]["files"] == ["src/auth.py", "tests/test_auth.py"]

        # The agent dies while the human thinks; the human approves meanwhile.
        agent.kill()
        server.cli(*cli, "approve", "ca", "--actor", "bob", "--reason", "ship it")
        eventually(lambda: client.get("ca").configuration == ["reviewing"], "reviewing")
        [task] = [t for t in client.tasks(instance="ca") if t.state == "reviewing"]
        assert task.status == "pending", "nobody works on the review until the agent is back"

        agent = Agent(server, ns, "ca")
        assert agent.proc.wait(60) == 0, "\n".join(agent.lines)
    finally:
        agent.kill()

    done = client.get("ca")
    assert done.status == "completed" and done.configuration == ["completed"]
    assert done.context["plan_approved_by"] == "ann"
    assert done.context["implementation_approved_by"] == "bob"
    assert done.context["plan_rejection_reason"] == "say how sessions expire"
    assert done.context["review"]["verdict"] == "approve"
    events = [t.event for t in client.history("ca") if t.kind == "event"]
    assert events == [
        "task.done", "reject", "task.done", "approve",
        "task.done", "done", "task.done", "done", "approve",
        "task.done", "task.done", "task.done",
    ], events
    # Tests and lint ran as two tasks at once; each outcome reached its own region.
    outcomes = [t.addressed_to or "" for t in client.history("ca") if t.kind == "event"]
    verifying = sorted(outcomes[-2:])
    assert verifying == ["verifying.lint.run", "verifying.tests.run"], verifying
    assert done.context["tests"]["passed"] is True and done.context["lint"]["warnings"] == 0
    dones = [t.payload.get("passed") for t in client.history("ca") if t.event == "done"]
    assert dones == [False, True]
    assert any("continuing ca" in line for line in agent.lines)
    assert client.export("ca")["usage"]["tokens"] == 2 * 350 + 2 * 1200 + 400
    assert client.verify("ca").ok
    _ = second
