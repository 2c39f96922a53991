"""What each API call sends and how its answer is read, written once for both clients.

A :class:`Call` is a plain description (method, path, query, body, parser); the sync and
async clients only differ in how they carry it out.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Generic, List, Mapping, Optional, TypeVar, Union
from urllib.parse import quote

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
    Machine,
    Outcome,
    Reported,
    Sent,
    Task,
    Token,
    Transition,
    VerifyReport,
)

T = TypeVar("T")

Definition = Union[Mapping[str, Any], str, "os.PathLike[str]"]
"""A machine definition: a mapping (sent as JSON), YAML/TOML/JSON text, or a file path."""


@dataclass
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    params: Dict[str, Any] = field(default_factory=dict)
    json: Any = None
    content: Optional[bytes] = None
    content_type: Optional[str] = None
    # True when sending it twice does no harm, so a transport failure may be retried.
    safe: bool = False
    # The answer is text, not JSON.
    text: bool = False


def seg(value: Union[str, int]) -> str:
    """One path segment, escaped."""
    return quote(str(value), safe="")


def _none(_: Any) -> None:
    return None


def _body(**fields: Any) -> Dict[str, Any]:
    """A JSON body without the fields left unset."""
    return {k: v for k, v in fields.items() if v is not None}


# Machines


def apply(definition: Definition, format: Optional[str] = None) -> Call[Applied]:
    if isinstance(definition, Mapping):
        return Call("POST", "/v1/machines", Applied.from_json, json=dict(definition), safe=True)
    if isinstance(definition, os.PathLike):
        p = Path(definition)
        text = p.read_text(encoding="utf-8")
        format = format or {".toml": "toml", ".json": "json"}.get(p.suffix.lower(), "yaml")
    else:
        text = definition
        format = format or ("json" if text.lstrip().startswith("{") else "yaml")
    if format not in ("yaml", "toml", "json"):
        raise ValueError(f"format must be yaml, toml or json, not {format!r}")
    return Call(
        "POST",
        "/v1/machines",
        Applied.from_json,
        content=text.encode("utf-8"),
        content_type=f"application/{format}",
        safe=True,
    )


def machines() -> Call[List[Machine]]:
    return Call("GET", "/v1/machines", lambda d: [Machine.from_json(m) for m in d], safe=True)


def machine(name: str, version: Optional[int] = None) -> Call[Machine]:
    path = f"/v1/machines/{seg(name)}"
    if version is not None:
        path += f"/versions/{int(version)}"
    return Call("GET", path, Machine.from_json, safe=True)


def delete_machine(name: str, version: int) -> Call[None]:
    return Call("DELETE", f"/v1/machines/{seg(name)}/versions/{int(version)}", _none)


def repair(dry_run: bool) -> Call[Dict[str, Any]]:
    return Call("POST", "/v1/repair", dict, json={"dry_run": dry_run})


def vacuum() -> Call[Dict[str, Any]]:
    return Call("POST", "/v1/vacuum", dict, json={}, safe=True)


def diagram(name: str, format: str, instance: Optional[str]) -> Call[str]:
    params = _body(format=format, instance=instance)
    return Call("GET", f"/v1/machines/{seg(name)}/diagram", str, params=params, safe=True, text=True)


# Instances


def start(
    machine: str,
    input: JSON,
    id: Optional[str],
    version: Optional[int],
    labels: Optional[Mapping[str, str]],
    actor: Optional[str],
    on_behalf_of: Optional[str] = None,
) -> Call[Instance]:
    body = _body(machine=machine, input=input, id=id, version=version, actor=actor, on_behalf_of=on_behalf_of)
    if labels:
        body["labels"] = dict(labels)
    return Call("POST", "/v1/instances", Instance.from_json, json=body)


def send(
    id: str,
    event: str,
    payload: JSON,
    key: Optional[str],
    expected_version: Optional[int],
    actor: Optional[str],
    reason: Optional[str],
    on_behalf_of: Optional[str] = None,
) -> Call[Sent]:
    body = _body(
        event=event,
        payload=payload,
        key=key,
        expected_version=expected_version,
        actor=actor,
        reason=reason,
        on_behalf_of=on_behalf_of,
    )
    # With a key the server applies the event once however often it arrives.
    return Call("POST", f"/v1/instances/{seg(id)}/events", Sent.from_json, json=body, safe=key is not None)


def get(id: str) -> Call[Instance]:
    return Call("GET", f"/v1/instances/{seg(id)}", Instance.from_json, safe=True)


def instances(
    machine: Optional[str],
    status: Optional[str],
    state: Optional[str],
    labels: Optional[Mapping[str, str]],
    parent: Optional[str],
    limit: Optional[int],
    after: Optional[str],
) -> Call[InstancePage]:
    params: Dict[str, Any] = _body(
        machine=machine, status=status, state=state, parent=parent, limit=limit, after=after
    )
    if labels:
        params["label"] = [f"{k}={v}" for k, v in labels.items()]
    return Call("GET", "/v1/instances", InstancePage.from_json, params=params, safe=True)


def delete(id: str) -> Call[None]:
    # Not retried: a repeat after a lost answer would report NotFound for a success.
    return Call("DELETE", f"/v1/instances/{seg(id)}", _none)


def accepts(id: str) -> Call[List[str]]:
    return Call("GET", f"/v1/instances/{seg(id)}/accepts", lambda d: [str(e) for e in d], safe=True)


def waiting(id: str) -> Call[Dict[str, Any]]:
    return Call("GET", f"/v1/instances/{seg(id)}/waiting", lambda d: dict(d), safe=True)


def history(
    id: str, limit: Optional[int] = None, before: Optional[int] = None
) -> Call[List[Transition]]:
    return Call(
        "GET",
        f"/v1/instances/{seg(id)}/history",
        lambda d: [Transition.from_json(t) for t in d],
        params=_body(limit=limit, before=before),
        safe=True,
    )


def checkpoints(id: str) -> Call[List[Checkpoint]]:
    return Call(
        "GET",
        f"/v1/instances/{seg(id)}/checkpoints",
        lambda d: [Checkpoint.from_json(c) for c in d],
        safe=True,
    )


def checkpoint(id: str, name: str) -> Call[Checkpoint]:
    return Call("POST", f"/v1/instances/{seg(id)}/checkpoints", Checkpoint.from_json, json={"name": name})


def fork(
    id: str,
    from_: Union[int, str],
    new_id: Optional[str],
    patch: JSON,
    actor: Optional[str] = None,
    on_behalf_of: Optional[str] = None,
) -> Call[Instance]:
    body = _body(**{"from": from_, "id": new_id, "patch": patch, "actor": actor, "on_behalf_of": on_behalf_of})
    return Call("POST", f"/v1/instances/{seg(id)}/fork", Instance.from_json, json=body)


def lifecycle(
    id: str, op: str, actor: Optional[str], reason: Optional[str], on_behalf_of: Optional[str] = None
) -> Call[Instance]:
    return Call(
        "POST",
        f"/v1/instances/{seg(id)}/{op}",
        Instance.from_json,
        json=_body(actor=actor, reason=reason, on_behalf_of=on_behalf_of),
    )


def export(id: str, format: str) -> Call[Any]:
    return Call(
        "GET",
        f"/v1/instances/{seg(id)}/export",
        lambda d: d,
        params={"format": format},
        safe=True,
        text=format != "json",
    )


def verify(id: Optional[str]) -> Call[VerifyReport]:
    return Call("POST", "/v1/verify", VerifyReport.from_json, json=_body(id=id), safe=True)


# Approvals


def approvals(status: Optional[str], instance: Optional[str]) -> Call[List[Approval]]:
    return Call(
        "GET",
        "/v1/approvals",
        lambda d: [Approval.from_json(a) for a in d],
        params=_body(status=status, instance=instance),
        safe=True,
    )


def decide(
    approval: str,
    approve: bool,
    actor: Optional[str],
    reason: Optional[str],
    payload: JSON,
    on_behalf_of: Optional[str] = None,
) -> Call[Decided]:
    op = "approve" if approve else "reject"
    body = _body(actor=actor, reason=reason, payload=payload, on_behalf_of=on_behalf_of)
    return Call("POST", f"/v1/approvals/{seg(approval)}/{op}", Decided.from_json, json=body)


# Tasks


def tasks(queue: Optional[str], status: Optional[str], instance: Optional[str]) -> Call[List[Task]]:
    return Call(
        "GET",
        "/v1/tasks",
        lambda d: [Task.from_json(t) for t in d],
        params=_body(queue=queue, status=status, instance=instance),
        safe=True,
    )


def claim(
    queues: List[str], worker: str, batch: int, wait_ms: int, lease_ms: Optional[int]
) -> Call[List[Claimed]]:
    body = _body(queues=list(queues), worker=worker, batch=batch, wait_ms=wait_ms, lease_ms=lease_ms)
    return Call("POST", "/v1/tasks/claim", lambda d: [Claimed.from_json(c) for c in d], json=body)


def heartbeat(id: str, attempt: int, lease_ms: Optional[int]) -> Call[Dict[str, Any]]:
    return Call(
        "POST",
        f"/v1/tasks/{seg(id)}/heartbeat",
        dict,
        json=_body(attempt=attempt, lease_ms=lease_ms),
        safe=True,
    )


def complete(
    id: str, attempt: int, output: JSON, tokens: Optional[int], cost: Optional[float]
) -> Call[Task]:
    body = _body(attempt=attempt, tokens=tokens, cost=cost)
    body["output"] = output
    return Call("POST", f"/v1/tasks/{seg(id)}/complete", Task.from_json, json=body)


def fail(
    id: str,
    attempt: int,
    error: str,
    retryable: bool,
    tokens: Optional[int],
    cost: Optional[float],
) -> Call[Failed]:
    body = _body(attempt=attempt, error=error, retryable=retryable, tokens=tokens, cost=cost)
    return Call("POST", f"/v1/tasks/{seg(id)}/fail", Failed.from_json, json=body)


def report(
    outcomes: List[Outcome],
    queues: Optional[List[str]],
    worker: Optional[str],
    batch: int,
    wait_ms: int,
    lease_ms: Optional[int],
) -> Call[Reported]:
    body: Dict[str, Any] = {"outcomes": [o.to_json() for o in outcomes]}
    if queues:
        if not worker:
            raise ValueError("a claim needs the worker's name")
        body["claim"] = _body(queues=list(queues), worker=worker, batch=batch, wait_ms=wait_ms, lease_ms=lease_ms)
    # An identical repeat of an applied outcome is answered as applied, so a report
    # without a claim may be sent again; one with a claim would claim again.
    return Call("POST", "/v1/tasks/report", Reported.from_json, json=body, safe=not queues)


# Triggers, schedules, operations


def add_named(kind: str, spec: Mapping[str, Any]) -> Call[Dict[str, Any]]:
    return Call("POST", f"/v1/{kind}", dict, json=dict(spec))


def list_named(kind: str) -> Call[List[Dict[str, Any]]]:
    return Call("GET", f"/v1/{kind}", lambda d: [dict(x) for x in d], safe=True)


def remove_named(kind: str, name: str) -> Call[None]:
    return Call("DELETE", f"/v1/{kind}/{seg(name)}", _none)


def stats() -> Call[Dict[str, Any]]:
    return Call("GET", "/v1/stats", dict, safe=True)


def tick() -> Call[Dict[str, Any]]:
    return Call("POST", "/v1/tick", dict, json={}, safe=True)


# Tokens


def create_token(role: str, namespaces: List[str], name: Optional[str]) -> Call[CreatedToken]:
    body = _body(role=role, namespaces=list(namespaces), name=name)
    return Call("POST", "/v1/tokens", CreatedToken.from_json, json=body)


def tokens() -> Call[List[Token]]:
    return Call("GET", "/v1/tokens", lambda d: [Token.from_json(t) for t in d], safe=True)


def revoke_token(id: str) -> Call[None]:
    return Call("DELETE", f"/v1/tokens/{seg(id)}", _none)


def health() -> Call[Dict[str, Any]]:
    return Call("GET", "/healthz", lambda d: d if isinstance(d, dict) else {"status": d}, safe=True)


def dumps(value: Any) -> bytes:
    """JSON as the server wants it: UTF-8, no NaN."""
    return json.dumps(value, allow_nan=False, separators=(",", ":")).encode("utf-8")
