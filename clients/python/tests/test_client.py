"""The sync client against a real server: every family of calls, and the errors."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
from pathlib import Path

import pytest

import cairn_client
from cairn_client import AsyncClient, Client, errors
from conftest import EXAMPLES, Server, cairn_bin

DOC = """
machine: doc
description: a document with a review
context: { edits: 0 }
input_schema:
  type: object
  properties: { title: { type: string, minLength: 1 } }
  required: [title]
initial: draft
states:
  draft:
    on:
      edit: { assign: { edits: "context.edits + 1", text: "event.payload.text" } }
      submit: review
  review:
    approval: { prompt: "Publish?" }
    on:
      approve: { target: published, assign: { approved_by: "event.actor" } }
      reject: { target: draft, assign: { feedback: "event.reason" } }
  published: { type: final }
"""


def test_apply_text_mapping_and_file(client: Client, tmp_path: Path) -> None:
    first = client.apply(DOC)
    assert (first.machine, first.version, first.created) == ("doc", 1, True)
    assert client.apply(DOC).created is False, "the same content again writes nothing"
    m = client.machine("doc")
    assert m.version == 1 and m.description == "a document with a review"
    assert m.definition is not None and m.definition["initial"] == "draft"
    # The definition as a mapping: a new version when it differs.
    changed = dict(m.definition)
    changed["description"] = "changed"
    assert client.apply(changed).version == 2
    assert client.machine("doc", 1).description == "a document with a review"
    assert [x.version for x in client.machines() if x.name == "doc"] == [2]
    # A file, its format taken from the suffix.
    f = tmp_path / "coding-agent.yaml"
    f.write_text((EXAMPLES / "coding-agent.yaml").read_text())
    assert client.apply(f).machine == "coding-agent"
    assert "planning" in client.diagram("coding-agent")


def test_machine_versions_are_deleted_when_unused_and_repair_reports(client: Client) -> None:
    client.apply(DOC)
    second = client.apply(DOC.replace("edits: 0", "edits: 1"))
    assert second.version == 2
    client.start("doc", {"title": "T"}, id="on-two")
    client.delete_machine("doc", 1)
    with pytest.raises(errors.NotFound):
        client.delete_machine("doc", 1)
    with pytest.raises(errors.Conflict):
        client.delete_machine("doc", 2)
    assert client.repair(dry_run=True) == {"deleted": [], "deletable": [], "in_use": []}
    space = client.vacuum()
    assert space["bytes_after"] <= space["bytes_before"], space
    assert space["free_bytes_after"] <= space["free_bytes_before"], space
    assert space["steps"] >= 0 and space["longest_step_ms"] <= space["duration_ms"] + 1, space


def test_apply_returns_warnings(client: Client) -> None:
    warned = client.apply(
        "machine: w\ninitial: a\nstates:\n  a:\n    task: { queue: q }\n    on: { task.done: b }\n  b: { type: final }\n"
    )
    assert warned.created
    assert [(w["kind"], w["severity"], w["state"]) for w in warned.warnings] == [
        ("unhandled-outcome", "warning", "a")
    ], warned.warnings
    assert client.apply("machine: fine\ninitial: a\nstates:\n  a: {}\n").warnings == []
    # A task's success that nothing takes, in a state nothing else can leave: refused.
    with pytest.raises(errors.InvalidDefinition) as e:
        client.apply(
            "machine: lost\ninitial: a\nstates:\n  a:\n    task: { queue: q }\n    on: { task.failed: b }\n  b: { type: final }\n"
        )
    assert [(p["kind"], p["severity"]) for p in e.value.problems] == [("unhandled-outcome", "error")], e.value.problems


def test_invalid_definition_names_what_and_where(client: Client) -> None:
    with pytest.raises(errors.InvalidDefinition) as e:
        client.apply("machine: bad\ninitial: nowhere\nstates:\n  a: {}\n")
    assert e.value.status == 400 and e.value.kind == "invalid-definition"
    assert e.value.problems, "each finding is listed"
    assert any("nowhere" in p["message"] for p in e.value.problems), e.value.problems
    with pytest.raises(errors.InvalidDefinition):
        client.apply("machine: bad\ninitial: a\nstates:\n  a: { on: { go: { target: a, guard: 'context.' } } }\n")


def test_waiting_lists_approvals_timers_and_open_tasks(client: Client) -> None:
    client.apply(
        "machine: wt\ninitial: p\nstates:\n  p:\n    type: parallel\n    states:\n"
        "      t: { initial: s, states: { s: { task: { queue: q }, on: { task.done: d, task.failed: d } }, d: { type: final } } }\n"
        "      a: { initial: s, states: { s: { approval: 'ok?', after: { 1h: d }, on: { approve: d, reject: d } }, d: { type: final } } }\n"
    )
    client.start("wt", id="w1")
    w = client.waiting("w1")
    assert [a["state"] for a in w["approvals"]] == ["p.a.s"], w
    assert [t["state"] for t in w["timers"]] == ["p.a.s"], w
    assert [(t["state"], t["attempts"]) for t in w["tasks"]] == [("p.t.s", [])], w
    assert w["queued"] == [] and w["children"] == [], w


def test_start_send_get_and_idempotency_keys(client: Client) -> None:
    client.apply(DOC)
    inst = client.start("doc", {"title": "Plan"}, id="d1", labels={"team": "a"})
    assert (inst.id, inst.status, inst.configuration, inst.version) == ("d1", "running", ["draft"], 1)
    assert inst.context["title"] == "Plan" and inst.labels == {"team": "a"}

    sent = client.send("d1", "edit", {"text": "v1"}, key="edit-1", actor="ann")
    assert not sent.replayed and sent.transition is not None
    assert sent.transition.event == "edit" and sent.transition.actor == "ann"
    assert sent.instance.context["edits"] == 1
    again = client.send("d1", "edit", {"text": "v1"}, key="edit-1", actor="ann")
    assert again.replayed, "the same key applies once"
    assert client.get("d1").context["edits"] == 1
    with pytest.raises(errors.IdempotencyKeyReused):
        client.send("d1", "edit", {"text": "other"}, key="edit-1")

    with pytest.raises(errors.VersionConflict) as vc:
        client.send("d1", "edit", {"text": "v2"}, expected_version=1)
    assert vc.value.current_version == 2
    assert client.send("d1", "edit", {"text": "v2"}, expected_version=2).instance.version == 3

    with pytest.raises(errors.EventNotAccepted) as na:
        client.send("d1", "publish")
    assert set(na.value.accepts) >= {"edit", "submit"}, na.value.accepts
    assert set(client.accepts("d1")) >= {"edit", "submit"}
    with pytest.raises(errors.ReservedEvent):
        client.send("d1", "approve")
    with pytest.raises(errors.AlreadyExists):
        client.start("doc", {"title": "again"}, id="d1")
    with pytest.raises(errors.InvalidRequest) as bad:
        client.start("doc", {"title": ""})
    assert "title" in bad.value.detail
    with pytest.raises(errors.NotFound):
        client.get("nope")
    with pytest.raises(errors.NotFound):
        client.start("no-such-machine")


def test_pagination_filters_and_iteration(client: Client) -> None:
    client.apply(DOC)
    for i in range(7):
        client.start("doc", {"title": f"t{i}"}, id=f"p{i}", labels={"parity": "even" if i % 2 == 0 else "odd"})
    client.send("p3", "submit")
    seen = []
    page = client.instances(limit=3)
    pages = 0
    while True:
        pages += 1
        assert len(page.instances) <= 3
        seen += [i.id for i in page.instances]
        if page.next is None:
            break
        page = client.instances(limit=3, after=page.next)
    assert pages == 3 and sorted(seen) == [f"p{i}" for i in range(7)] and len(set(seen)) == 7
    assert sorted(i.id for i in client.iter_instances(page_size=2)) == sorted(seen)
    assert sorted(i.id for i in client.iter_instances(labels={"parity": "odd"})) == ["p1", "p3", "p5"]
    assert [i.id for i in client.iter_instances(state="review")] == ["p3"]
    assert len(list(client.iter_instances(machine="doc", status="running"))) == 7


def test_approvals_history_checkpoints_and_fork(client: Client) -> None:
    client.apply(DOC)
    client.start("doc", {"title": "T"}, id="a1")
    client.send("a1", "edit", {"text": "first"})
    cp = client.checkpoint("a1", "edited")
    assert (cp.name, cp.version, cp.configuration) == ("edited", 2, ["draft"])
    client.send("a1", "submit")
    [pending] = client.approvals(instance="a1")
    assert pending.prompt == "Publish?" and pending.status == "pending" and pending.state == "review"
    rejected = client.reject(pending.id, actor="bob", reason="too short")
    assert rejected.instance.configuration == ["draft"]
    assert rejected.instance.context["feedback"] == "too short"
    assert rejected.approval.status == "rejected" and rejected.approval.decisions[0].actor == "bob"
    client.send("a1", "submit")
    [again] = client.approvals(instance="a1")
    decided = client.approve(again.id, actor="ann", reason="good")
    assert decided.instance.status == "completed" and decided.instance.context["approved_by"] == "ann"
    assert client.approvals(instance="a1") == []
    assert len(client.approvals(instance="a1", status="approved")) == 1

    history = client.history("a1")
    assert [t.seq for t in history] == list(range(1, len(history) + 1))
    assert [t.event for t in history if t.kind == "event"] == ["edit", "submit", "reject", "submit", "approve"]
    assert history[-1].to_states == ["published"] and history[-1].actor == "ann"
    assert [c.name for c in client.checkpoints("a1")] == ["edited"]

    fork = client.fork("a1", "edited", new_id="a1-fork", patch={"text": "patched"})
    assert fork.id == "a1-fork" and fork.configuration == ["draft"] and fork.context["text"] == "patched"
    from_version = client.fork("a1", 3)
    assert from_version.configuration == ["review"]

    exported = client.export("a1")
    assert exported["instance"]["id"] == "a1" and len(exported["history"]) == len(history)
    assert "# " in client.export("a1", format="markdown")
    report = client.verify("a1")
    assert report.ok and report.checked == 1 and report.instances[0].versions == history[-1].version
    assert client.verify().ok


def test_pause_queues_events_resume_applies_them_cancel_ends(client: Client) -> None:
    client.apply(DOC)
    client.start("doc", {"title": "T"}, id="l1")
    assert client.pause("l1", actor="ops", reason="maintenance").status == "paused"
    queued = client.send("l1", "edit", {"text": "while paused"})
    assert queued.queued and queued.transition is None
    resumed = client.resume("l1")
    assert resumed.status == "running" and resumed.context["edits"] == 1
    assert client.cancel("l1", reason="no longer needed").status == "cancelled"
    with pytest.raises(errors.InstanceFinished):
        client.send("l1", "edit", {"text": "late"})
    client.delete("l1")
    with pytest.raises(errors.NotFound):
        client.get("l1")


def test_wait_returns_when_the_condition_holds_and_times_out_naming_the_state(client: Client) -> None:
    client.apply(DOC)
    client.start("doc", {"title": "T"}, id="w1")
    assert client.wait("w1", lambda i: i.in_state("draft")).version == 1
    with pytest.raises(TimeoutError, match=r"w1 still running in \['draft'\]"):
        client.wait("w1", timeout=0.2)


def test_oversized_payload_and_unreachable_server(client: Client) -> None:
    client.apply(DOC)
    client.start("doc", {"title": "T"}, id="big")
    with pytest.raises(errors.TooLarge) as e:
        client.send("big", "edit", {"text": "x" * (3 * 1024 * 1024)})
    assert e.value.status == 413
    assert client.get("big").version == 1, "nothing was applied"
    with Client("http://127.0.0.1:9", retries=1) as nowhere:
        with pytest.raises(errors.TransportError):
            nowhere.get("big")


def _token(data: Path, role: str, scope: str) -> str:
    out = subprocess.run(
        [cairn_bin(), "--json", "token", "create", "--role", role, "--scope", scope],
        env=dict(os.environ, CAIRN_DATA=str(data)),
        capture_output=True,
        text=True,
        check=True,
    )
    return str(json.loads(out.stdout)["token"])


def test_tokens_roles_and_namespaces_map_to_their_exceptions(tmp_path: Path) -> None:
    data = tmp_path / "data"
    admin = _token(data, "admin", "*")
    viewer = _token(data, "viewer", "team-a")
    s = Server(data, args=["--auth", "on"])
    try:
        with Client(s.url, token="") as anonymous, pytest.raises(errors.Unauthorized):
            anonymous.machines()
        with Client(s.url, token="cairn_not_a_token") as wrong, pytest.raises(errors.Unauthorized):
            wrong.machines()
        with Client(s.url, token=admin, namespace="team-a") as a:
            a.apply(DOC)
            a.start("doc", {"title": "T"}, id="x")
        with Client(s.url, token=viewer, namespace="team-a") as v:
            assert v.get("x").id == "x"
            with pytest.raises(errors.Forbidden):
                v.send("x", "submit")
            with pytest.raises(errors.Forbidden):
                v.apply(DOC)
        with Client(s.url, token=viewer, namespace="team-b") as other, pytest.raises(errors.Forbidden):
            other.machines()
    finally:
        s.kill()


def test_subjects_scoped_tokens_and_a_streamed_backup(tmp_path: Path) -> None:
    data = tmp_path / "data"
    root = _token(data, "admin", "*")
    s = Server(data, args=["--auth", "on"])
    try:
        with Client(s.url, token=root, namespace="team-a") as r:
            made = r.create_token("admin", ["team-a"], name="lead")
            assert (made.token.subject, made.token.namespaces) == ("lead", ["team-a"])
            anon = r.create_token("operator", ["team-a"])
            assert anon.token.subject == f"token:{anon.token.id}"
        with Client(s.url, token=made.secret, namespace="team-a") as lead:
            # A scoped admin mints nothing wider or stronger than itself, sees only its own.
            with pytest.raises(errors.Forbidden):
                lead.create_token("admin", ["*"])
            with pytest.raises(errors.Forbidden):
                lead.create_token("viewer", ["team-b"])
            with pytest.raises(errors.InvalidRequest):
                lead.create_token("viewer", ["team-a"], name="timer")
            assert {t.subject for t in lead.tokens()} == {"lead", anon.token.subject}
            with pytest.raises(errors.Forbidden):
                lead.backup(tmp_path / "nope.db")
            assert not (tmp_path / "nope.db").exists()
            # Whatever the body says, the actor is the token's subject.
            lead.apply(DOC)
            lead.start("doc", {"title": "T"}, id="x", actor="mallory")
            lead.send("x", "submit", actor="someone", on_behalf_of="boss")
            start, sent = lead.history("x")[:2]
            assert (start.actor, start.token, start.on_behalf_of) == ("lead", made.token.id, "mallory")
            assert (sent.actor, sent.token, sent.on_behalf_of) == ("lead", made.token.id, "boss")
        with Client(s.url, token=root, namespace="team-a") as r:
            size = r.backup(tmp_path / "copy.db")
            copy = tmp_path / "copy.db"
            assert size == copy.stat().st_size > 0
            assert not (tmp_path / "copy.db.partial").exists()
            with pytest.raises(FileExistsError):
                r.backup(copy)
            r.revoke_token(anon.token.id)
        with Client(s.url, token=anon.secret, namespace="team-a") as gone, pytest.raises(errors.Unauthorized):
            gone.get("x")
    finally:
        s.kill()
    # The copy is a whole data directory's database: restored, it holds the instance.
    restored = tmp_path / "restored"
    subprocess.run(
        [cairn_bin(), "restore", str(tmp_path / "copy.db")],
        env=dict(os.environ, CAIRN_DATA=str(restored)),
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [cairn_bin(), "--json", "--namespace", "team-a", "show", "x"],
        env=dict(os.environ, CAIRN_DATA=str(restored)),
        check=True,
        capture_output=True,
        text=True,
    )
    assert json.loads(out.stdout)["configuration"] == ["review"]


def test_sync_and_async_clients_offer_the_same_calls() -> None:
    def api(cls: type) -> dict[str, list[str]]:
        return {
            name: list(inspect.signature(fn).parameters)
            for name, fn in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_") and name not in ("close", "aclose")
        }

    sync, asyn = api(Client), api(AsyncClient)
    assert sync == asyn
    for name in sync:
        fn = getattr(AsyncClient, name)
        assert inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn), name
    assert set(cairn_client.__all__) <= set(dir(cairn_client))


def test_every_problem_type_of_the_server_maps_to_its_exception(server: Server) -> None:
    """The exception map is the server's list of problem types (cairn-api's `ProblemType`,
    published in the OpenAPI document), no more and no fewer."""
    import httpx

    doc = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    uris = doc["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]
    slugs = {u.removeprefix("/problems/") for u in uris}
    assert len(slugs) == len(uris) > 20
    assert set(errors._BY_TYPE) == slugs
    # Each maps to an exception that agrees with the problem's HTTP status family.
    for slug in slugs:
        assert issubclass(errors._BY_TYPE[slug], errors.ApiError), slug


def test_report_applies_outcomes_alone_repeats_as_applied_and_claims_the_next(client: Client, ns: str) -> None:
    queue = "rep-" + ns
    client.apply(
        f"machine: two\ninitial: a\nstates:\n"
        f"  a: {{ task: {{ queue: {queue}, action: one }}, on: {{ task.done: b }} }}\n"
        f"  b: {{ task: {{ queue: {queue}, action: two }}, on: {{ task.done: done }} }}\n"
        f"  done: {{ type: final }}\n"
    )
    client.start("two", id="r1")
    client.start("two", id="r2")
    first = client.report([], claim=[queue], worker="py", batch=10)
    assert first.outcomes == [] and sorted(t.instance for t in first.claimed) == ["r1", "r2"]
    t1, t2 = sorted(first.claimed, key=lambda t: t.instance)
    done = cairn_client.Outcome.completed(t1.id, t1.attempt, {"k": 1}, tokens=3)
    r = client.report(
        [done, cairn_client.Outcome.completed(t2.id, t2.attempt + 1)],
        claim=[queue],
        worker="py",
        batch=10,
    )
    assert [o.applied for o in r.outcomes] == [True, False]
    assert r.outcomes[1].problem is not None and r.outcomes[1].problem["status"] == 409
    assert [(t.instance, t.action) for t in r.claimed] == [("r1", "two")], "the next task came with the answer"
    again = client.report([done])
    assert again.outcomes[0].applied and again.outcomes[0].repeated
    assert client.get("r1").version == 2 and client.get("r2").version == 1
