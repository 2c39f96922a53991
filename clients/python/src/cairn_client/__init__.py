"""Cairn's Python client: durable statecharts for AI-agent workflows.

- :class:`Client` / :class:`AsyncClient`: machines, instances, events, history,
  approvals, checkpoints and forks, tasks, triggers, schedules and the event stream.
- :class:`Worker`: decorated functions that do the tasks states enqueue.
- :mod:`cairn_client.errors`: one exception per problem the server answers.
"""

from . import errors
from ._calls import Call, Definition
from ._models import (
    JSON,
    Applied,
    Approval,
    Checkpoint,
    Claimed,
    CreatedToken,
    Decided,
    Decision,
    Failed,
    Instance,
    InstancePage,
    LogEvent,
    Machine,
    Outcome,
    OutcomeReport,
    Reported,
    Sent,
    Task,
    Token,
    Transition,
    Verified,
    VerifyReport,
)
from .aio import AsyncClient
from .client import Client
from .errors import (
    AlreadyExists,
    ApiError,
    CairnError,
    Conflict,
    EventNotAccepted,
    EventRefused,
    Forbidden,
    IdempotencyKeyReused,
    InstanceFinished,
    InstancePaused,
    InvalidDefinition,
    InvalidRequest,
    NotFound,
    TransportError,
    Unauthorized,
    Unavailable,
    VersionConflict,
)
from .worker import PermanentError, Result, TaskContext, Worker

__version__ = "0.1.0"

__all__ = [
    "JSON",
    "AlreadyExists",
    "ApiError",
    "Applied",
    "Approval",
    "AsyncClient",
    "CairnError",
    "Call",
    "Checkpoint",
    "Claimed",
    "CreatedToken",
    "Client",
    "Conflict",
    "Decided",
    "Decision",
    "Definition",
    "EventNotAccepted",
    "EventRefused",
    "Failed",
    "Outcome",
    "OutcomeReport",
    "Reported",
    "Forbidden",
    "IdempotencyKeyReused",
    "Instance",
    "InstanceFinished",
    "InstancePage",
    "InstancePaused",
    "InvalidDefinition",
    "InvalidRequest",
    "LogEvent",
    "Machine",
    "NotFound",
    "PermanentError",
    "Result",
    "Sent",
    "Task",
    "Token",
    "TaskContext",
    "Transition",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "Verified",
    "VerifyReport",
    "VersionConflict",
    "Worker",
    "errors",
]
