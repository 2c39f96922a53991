"""Typed views of the API's JSON: one frozen dataclass per wire type.

Every model is built by ``from_json`` from the server's answer; fields the server adds
later are ignored, so an older client keeps working against a newer server. ``raw`` keeps
the answer as it came, for fields this version does not model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, List, Mapping, Optional

JSON = Any
"""A JSON value: dict, list, str, int, float, bool or None."""


def _dt(value: Any) -> datetime:
    text = str(value)
    # Python before 3.11 does not read the 'Z' suffix; nanosecond fractions are cut to
    # the microseconds datetime holds.
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    if "." in text:
        head, rest = text.split(".", 1)
        cut = len(rest)
        for i, c in enumerate(rest):
            if not c.isdigit():
                cut = i
                break
        text = head + "." + rest[:cut][:6].ljust(6, "0") + rest[cut:]
    return datetime.fromisoformat(text)


def _odt(value: Any) -> Optional[datetime]:
    return None if value is None else _dt(value)


@dataclass(frozen=True)
class Machine:
    """One version of a machine. ``definition`` is set when fetched by name."""

    name: str
    namespace: str
    version: int
    digest: str
    created_at: datetime
    description: Optional[str] = None
    definition: Optional[Dict[str, JSON]] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Machine:
        return cls(
            name=d["name"],
            namespace=d["namespace"],
            version=int(d["version"]),
            digest=d["digest"],
            created_at=_dt(d["created_at"]),
            description=d.get("description"),
            definition=d.get("definition"),
        )


@dataclass(frozen=True)
class Applied:
    """The answer to applying a definition; ``created`` is False when nothing changed."""

    machine: str
    version: int
    created: bool
    # What validation found that does not refuse the definition: each with kind,
    # severity, file, line, column, state and message.
    warnings: List[Dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Applied:
        return cls(
            machine=d["machine"],
            version=int(d["version"]),
            created=bool(d["created"]),
            warnings=list(d.get("warnings") or []),
        )


@dataclass(frozen=True)
class Instance:
    """An instance: its status, active leaf states (``configuration``) and context."""

    id: str
    namespace: str
    machine: str
    machine_version: int
    status: str
    configuration: List[str]
    context: Dict[str, JSON]
    version: int
    labels: Dict[str, str]
    parent: Optional[str]
    last_error: Optional[str]
    created_at: datetime
    updated_at: datetime

    @property
    def finished(self) -> bool:
        """True once completed, failed or cancelled."""
        return self.status in ("completed", "failed", "cancelled")

    def in_state(self, path: str) -> bool:
        """True when ``path`` or one of its descendants is active."""
        return any(s == path or s.startswith(path + ".") for s in self.configuration)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Instance:
        return cls(
            id=d["id"],
            namespace=d["namespace"],
            machine=d["machine"],
            machine_version=int(d["machine_version"]),
            status=d["status"],
            configuration=list(d["configuration"]),
            context=d["context"],
            version=int(d["version"]),
            labels=dict(d.get("labels") or {}),
            parent=d.get("parent"),
            last_error=d.get("last_error"),
            created_at=_dt(d["created_at"]),
            updated_at=_dt(d["updated_at"]),
        )


@dataclass(frozen=True)
class Transition:
    """One history record: the start, an applied event, or a pause/resume/cancel."""

    seq: int
    kind: str
    version: int
    event: Optional[str]
    payload: JSON
    actor: str
    reason: str
    from_states: List[str]
    to_states: List[str]
    context: Dict[str, JSON]
    status: str
    idempotency_key: Optional[str]
    effects: JSON
    time_in_states_ms: Optional[int]
    at: datetime
    # The id of the token the change was made with (auth on), and whom the caller said
    # it acted for.
    token: Optional[str] = None
    on_behalf_of: Optional[str] = None
    # The state an outcome (task.done, approve, child.done, ...) was addressed to.
    addressed_to: Optional[str] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Transition:
        return cls(
            seq=int(d["seq"]),
            kind=d["kind"],
            version=int(d["version"]),
            event=d.get("event"),
            payload=d.get("payload"),
            actor=d.get("actor", ""),
            reason=d.get("reason", ""),
            from_states=list(d.get("from") or []),
            to_states=list(d.get("to") or []),
            context=d.get("context") or {},
            status=d["status"],
            idempotency_key=d.get("idempotency_key"),
            effects=d.get("effects"),
            time_in_states_ms=d.get("time_in_states_ms"),
            at=_dt(d["at"]),
            token=d.get("token"),
            on_behalf_of=d.get("on_behalf_of"),
            addressed_to=d.get("addressed_to"),
        )


@dataclass(frozen=True)
class Sent:
    """The answer to sending an event: the instance as it is now and what happened.

    ``replayed`` is True when the idempotency key had been used already (nothing was
    applied again); ``queued`` when the instance is paused and the event waits for resume.
    """

    instance: Instance
    transition: Optional[Transition]
    replayed: bool
    queued: bool

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Sent:
        t = d.get("transition")
        return cls(
            instance=Instance.from_json(d),
            transition=None if t is None else Transition.from_json(t),
            replayed=bool(d.get("replayed")),
            queued=bool(d.get("queued")),
        )


@dataclass(frozen=True)
class InstancePage:
    """A page of instances; ``next`` is the cursor of the next page, if any."""

    instances: List[Instance]
    next: Optional[str]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> InstancePage:
        return cls(
            instances=[Instance.from_json(i) for i in d["instances"]],
            next=d.get("next"),
        )


@dataclass(frozen=True)
class Decision:
    actor: str
    approve: bool
    reason: str
    at: datetime
    token: Optional[str] = None
    on_behalf_of: Optional[str] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Decision:
        return cls(
            actor=d["actor"],
            approve=bool(d["approve"]),
            reason=d.get("reason", ""),
            at=_dt(d["at"]),
            token=d.get("token"),
            on_behalf_of=d.get("on_behalf_of"),
        )


@dataclass(frozen=True)
class Approval:
    """A human approval requested by a state."""

    id: str
    namespace: str
    instance: str
    state: str
    prompt: Optional[str]
    approvers: List[str]
    quorum: int
    status: str
    decisions: List[Decision]
    created_at: datetime
    decided_at: Optional[datetime]
    decided_by: Optional[str]
    reason: Optional[str]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Approval:
        return cls(
            id=d["id"],
            namespace=d["namespace"],
            instance=d["instance"],
            state=d["state"],
            prompt=d.get("prompt"),
            approvers=list(d.get("approvers") or []),
            quorum=int(d.get("quorum", 1)),
            status=d["status"],
            decisions=[Decision.from_json(x) for x in d.get("decisions") or []],
            created_at=_dt(d["created_at"]),
            decided_at=_odt(d.get("decided_at")),
            decided_by=d.get("decided_by"),
            reason=d.get("reason"),
        )


@dataclass(frozen=True)
class Decided:
    """The answer to approve / reject; ``transition`` is None while a quorum is short."""

    approval: Approval
    instance: Instance
    transition: Optional[Transition]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Decided:
        t = d.get("transition")
        return cls(
            approval=Approval.from_json(d["approval"]),
            instance=Instance.from_json(d["instance"]),
            transition=None if t is None else Transition.from_json(t),
        )


@dataclass(frozen=True)
class Checkpoint:
    name: str
    instance: str
    version: int
    seq: int
    configuration: List[str]
    context: Dict[str, JSON]
    status: str
    created_at: datetime

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Checkpoint:
        return cls(
            name=d["name"],
            instance=d["instance"],
            version=int(d["version"]),
            seq=int(d["seq"]),
            configuration=list(d["configuration"]),
            context=d["context"],
            status=d["status"],
            created_at=_dt(d["created_at"]),
        )


@dataclass(frozen=True)
class Task:
    """A task as listed (``GET /v1/tasks``) or as completed."""

    id: str
    namespace: str
    instance: str
    state: str
    queue: str
    action: str
    input: JSON
    status: str
    attempt: int
    available_at: datetime
    lease_owner: Optional[str]
    lease_expires_at: Optional[datetime]
    output: JSON
    error: Optional[str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Task:
        return cls(
            id=d["id"],
            namespace=d["namespace"],
            instance=d["instance"],
            state=d["state"],
            queue=d["queue"],
            action=d["action"],
            input=d.get("input"),
            status=d["status"],
            attempt=int(d["attempt"]),
            available_at=_dt(d["available_at"]),
            lease_owner=d.get("lease_owner"),
            lease_expires_at=_odt(d.get("lease_expires_at")),
            output=d.get("output"),
            error=d.get("error"),
            created_at=_dt(d["created_at"]),
            updated_at=_dt(d["updated_at"]),
        )


@dataclass(frozen=True)
class Claimed:
    """A task claimed by a worker. ``(id, attempt)`` is the idempotency key of the
    worker's own side effects: a retried or reclaimed task has a higher attempt."""

    id: str
    namespace: str
    instance: str
    state: str
    queue: str
    action: str
    input: JSON
    attempt: int
    max_attempts: int
    lease_expires_at: datetime

    @property
    def idempotency_key(self) -> str:
        return f"{self.id}:{self.attempt}"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Claimed:
        return cls(
            id=d["id"],
            namespace=d["namespace"],
            instance=d["instance"],
            state=d["state"],
            queue=d["queue"],
            action=d["action"],
            input=d.get("input"),
            attempt=int(d["attempt"]),
            max_attempts=int(d["max_attempts"]),
            lease_expires_at=_dt(d["lease_expires_at"]),
        )


@dataclass(frozen=True)
class Failed:
    """The answer to failing an attempt: ``retrying`` is True when another attempt is due."""

    task: Task
    retrying: bool

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Failed:
        return cls(task=Task.from_json(d["task"]), retrying=bool(d["retrying"]))


@dataclass(frozen=True)
class Outcome:
    """One attempt's outcome, for :meth:`Client.report`: build it with
    :meth:`Outcome.completed` or :meth:`Outcome.failed`."""

    task: str
    attempt: int
    ok: bool
    output: JSON = None
    error: Optional[str] = None
    retryable: bool = True
    tokens: Optional[int] = None
    cost: Optional[float] = None

    @classmethod
    def completed(
        cls, task: str, attempt: int, output: JSON = None, *, tokens: Optional[int] = None, cost: Optional[float] = None
    ) -> Outcome:
        return cls(task, attempt, True, output=output, tokens=tokens, cost=cost)

    @classmethod
    def failed(
        cls,
        task: str,
        attempt: int,
        error: str,
        *,
        retryable: bool = True,
        tokens: Optional[int] = None,
        cost: Optional[float] = None,
    ) -> Outcome:
        return cls(task, attempt, False, error=error, retryable=retryable, tokens=tokens, cost=cost)

    def to_json(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"task": self.task, "attempt": self.attempt}
        if self.ok:
            d["outcome"] = "completed"
            d["output"] = self.output
        else:
            d["outcome"] = "failed"
            d["error"] = self.error
            d["retryable"] = self.retryable
        if self.tokens is not None:
            d["tokens"] = self.tokens
        if self.cost is not None:
            d["cost"] = self.cost
        return d


@dataclass(frozen=True)
class OutcomeReport:
    """What became of one outcome of a report: ``applied`` (now, or before: ``repeated``,
    an identical repeat after a lost answer), ``retrying`` for a failure that will be tried
    again, the task's ``status``; or, when refused, ``problem`` (the server's problem
    document: a stale attempt is ``/problems/conflict``)."""

    task: str
    attempt: int
    applied: bool
    repeated: bool
    retrying: bool
    status: Optional[str]
    problem: Optional[Dict[str, Any]]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> OutcomeReport:
        return cls(
            task=d["task"],
            attempt=int(d["attempt"]),
            applied=bool(d["applied"]),
            repeated=bool(d.get("repeated", False)),
            retrying=bool(d.get("retrying", False)),
            status=d.get("status"),
            problem=d.get("problem"),
        )


@dataclass(frozen=True)
class Reported:
    """The answer to a report: one verdict per outcome, in the order sent, and the tasks
    claimed with it."""

    outcomes: List[OutcomeReport]
    claimed: List[Claimed]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Reported:
        return cls(
            outcomes=[OutcomeReport.from_json(o) for o in d.get("outcomes", [])],
            claimed=[Claimed.from_json(c) for c in d.get("claimed", [])],
        )


@dataclass(frozen=True)
class Verified:
    namespace: str
    id: str
    versions: int
    ok: bool
    problem: Optional[str]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Verified:
        return cls(
            namespace=d["namespace"],
            id=d["id"],
            versions=int(d["versions"]),
            ok=bool(d["ok"]),
            problem=d.get("problem"),
        )


@dataclass(frozen=True)
class VerifyReport:
    """History replayed and compared with the stored state, per instance."""

    ok: bool
    checked: int
    failed: int
    instances: List[Verified]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> VerifyReport:
        return cls(
            ok=bool(d["ok"]),
            checked=int(d["checked"]),
            failed=int(d["failed"]),
            instances=[Verified.from_json(v) for v in d["instances"]],
        )


@dataclass(frozen=True)
class LogEvent:
    """One entry of the commit-ordered log, as the event stream delivers it.

    ``position`` orders every entry; resuming after a position misses nothing.
    ``kind`` is ``transition``, ``started``, ``approval_requested``, ``task_enqueued``...
    or ``reset``: log retention removed entries the stream had not reached; ``position``
    is the horizon (``data["horizon"]``) and everything after it follows.
    """

    position: int
    namespace: str
    instance: str
    kind: str
    version: int
    at: datetime
    data: JSON = field(default=None)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LogEvent:
        return cls(
            position=int(d["position"]),
            namespace=d["namespace"],
            instance=d["instance"],
            kind=d["kind"],
            version=int(d.get("version") or 0),
            at=_dt(d["at"]),
            data=d.get("data"),
        )


@dataclass(frozen=True)
class Token:
    """An API token (never its secret). ``subject`` is who it stands for: the recorded
    actor of every change made with it."""

    id: str
    name: str
    subject: str
    role: str
    namespaces: List[str]
    created_at: datetime
    revoked_at: Optional[datetime]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Token:
        return cls(
            id=d["id"],
            name=d.get("name", ""),
            subject=d["subject"],
            role=d["role"],
            namespaces=list(d["namespaces"]),
            created_at=_dt(d["created_at"]),
            revoked_at=_dt(d["revoked_at"]) if d.get("revoked_at") else None,
        )


@dataclass(frozen=True)
class CreatedToken:
    """A token just created, with its secret (shown only this once)."""

    token: Token
    secret: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CreatedToken:
        return cls(token=Token.from_json(d), secret=d["token"])
