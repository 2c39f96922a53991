#!/usr/bin/env python3
"""A Python agent driving the seed 001 coding-agent machine (examples/coding-agent.yaml)
end to end, while a human approves the plan and the implementation in the CLI.

    cargo run --release -p cairn -- serve                    # terminal 1
    pip install ./clients/python
    python examples/coding_agent.py --request "add login"    # terminal 2
    cairn --server http://127.0.0.1:7878 approve <id> --actor you           # terminal 3
    cairn --server http://127.0.0.1:7878 reject <id> --actor you --reason "..."

What runs here:

- A :class:`cairn_client.Worker` on queue ``agents`` with the agent steps the machine
  enqueues as tasks: ``plan``, ``implement`` and ``review``, then ``test`` and ``lint``,
  which run at once in the two regions of ``verifying`` (each task's outcome reaches its
  own region). They are stand-ins
  (deterministic, no model call) so the example runs anywhere; replace their bodies with
  calls to your model. Each returns JSON, which the machine assigns into its context;
  raising an exception fails the attempt and the state's retry policy takes over.
- A driver that follows the instance on the event stream and does what is not a task:
  runs the tests when the implementation reaches ``implementing.testing`` (sending
  ``done`` with ``passed``), and says when a human's approval is awaited. Its events carry idempotency keys made of the instance
  version, so a restarted agent never applies one twice.

Rejections come back as ``context.feedback``: the planner and the coder read it. Stop the
agent at any point (Ctrl-C, or kill -9) and start it again with ``--id``: Cairn holds the
instance where it stood, and the agent carries on from there.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, List

from cairn_client import AsyncClient, TaskContext, Worker, errors

MACHINE = Path(__file__).with_name("coding-agent.yaml")


# The agent's steps: tasks the machine enqueues on queue `agents`.


def plan(task: TaskContext) -> Dict[str, Any]:
    request = task.input["request"]
    feedback = task.input.get("feedback") or ""
    steps = [f"add a route for: {request}", "store password hashes (argon2)"]
    if feedback:
        steps.append(f"address review: {feedback}")
    task.usage(tokens=350, cost=0.002)
    return {"plan": "; ".join(f"{i}. {s}" for i, s in enumerate(steps, 1))}


def implement(task: TaskContext) -> Dict[str, Any]:
    files = ["src/auth.py"]
    # The first implementation forgets the tests; the 'tests failed' feedback of the
    # machine's test loop fixes that.
    if "tests" in (task.input.get("feedback") or ""):
        files.append("tests/test_auth.py")
    task.usage(tokens=1200, cost=0.009)
    return {"files": files, "summary": f"implements: {task.input['plan']}"}


def review(task: TaskContext) -> Dict[str, Any]:
    files: List[str] = task.input["implementation"]["files"]
    task.usage(tokens=400, cost=0.003)
    return {"verdict": "approve", "comments": [f"reviewed {f}" for f in files]}


def test(task: TaskContext) -> Dict[str, Any]:
    files: List[str] = task.input["implementation"]["files"]
    return {"passed": run_tests(task.input["implementation"]), "files": len(files)}


def lint(task: TaskContext) -> Dict[str, Any]:
    files: List[str] = task.input["implementation"]["files"]
    return {"warnings": 0, "checked": files}


def run_tests(implementation: Dict[str, Any]) -> bool:
    return any(f.startswith("tests/") for f in implementation.get("files", []))


# The driver: what the agent does between tasks.


async def drive(client: AsyncClient, id: str, worker: Worker) -> str:
    async def act(inst_version: int, to: List[str]) -> None:
        if "implementing.testing" in to:
            inst = await client.get(id)
            passed = run_tests(inst.context.get("implementation") or {})
            say(f"tests {'passed' if passed else 'failed'}")
            await client.send(id, "done", {"passed": passed}, key=f"tests-{inst_version}", actor="agent")
        for s in ("plan_review", "implementation_review"):
            if s in to:
                # None when a human has already decided by the time we look.
                for approval in await client.approvals(instance=id):
                    say(f"waiting for a human: {approval.prompt}")
                    say(f"  cairn --server {client.url} approve {id} --actor YOU")
                    say(f"  cairn --server {client.url} reject {id} --actor YOU --reason WHY")

    async def react(version: int, to: List[str]) -> None:
        try:
            await act(version, to)
        except (errors.EventNotAccepted, errors.InstanceFinished) as e:
            say(f"the instance has moved on: {e.detail}")  # someone else acted first

    # Catch up with where the instance stands, then follow it.
    inst = await client.get(id)
    await react(inst.version, inst.configuration)
    last = inst.version
    async for ev in client.events(instance=id):
        if ev.kind != "transition" or ev.version <= last:
            continue
        last = ev.version
        data = ev.data or {}
        say(f"v{ev.version} {data.get('event')}: {data.get('from')} -> {data.get('to')}")
        if data.get("status") in ("completed", "failed", "cancelled"):
            worker.stop()
            return str(data["status"])
        await react(ev.version, list(data.get("to") or []))
    raise AssertionError("the event stream ended")


def say(text: str) -> None:
    print(f"[agent] {text}", flush=True)


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", help="the Cairn server (default: CAIRN_SERVER or http://127.0.0.1:7878)")
    p.add_argument("--namespace", default="default")
    p.add_argument("--request", default="add authentication", help="what the agent should build")
    p.add_argument("--id", help="the instance: continue it if it exists, else start it with this id")
    args = p.parse_args()

    async with AsyncClient(args.server, namespace=args.namespace) as client:
        await client.apply(MACHINE)
        id = args.id or f"ca-{uuid.uuid4().hex[:8]}"
        try:
            await client.start("coding-agent", {"request": args.request}, id=id, actor="agent")
            say(f"started {id}: {args.request}")
        except errors.AlreadyExists:
            say(f"continuing {id}")
        worker = Worker(client, queue="agents", name=f"agent-{id}", concurrency=2, lease=30)
        worker.task("plan")(plan)
        worker.task("implement")(implement)
        worker.task("review")(review)
        worker.task("test")(test)
        worker.task("lint")(lint)

        running = asyncio.ensure_future(worker.run_async(handle_signals=True))
        driving = asyncio.ensure_future(drive(client, id, worker))
        await asyncio.wait({running, driving}, return_when=asyncio.FIRST_COMPLETED)
        if not driving.done():
            # The worker was stopped (Ctrl-C, SIGTERM): the instance waits where it stands.
            driving.cancel()
            running.result()
            say(f"stopped; `--id {id}` continues it")
            return 130
        status = driving.result()
        await running
        inst = await client.get(id)
        say(f"{id} {status}: plan approved by {inst.context.get('plan_approved_by')}, "
            f"implementation approved by {inst.context.get('implementation_approved_by')}")
        return 0 if status == "completed" else 1


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(130)
