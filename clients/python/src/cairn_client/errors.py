"""Exceptions mapped from the server's ``application/problem+json`` answers.

Every problem the server returns raises a subclass of :class:`ApiError` chosen by its
stable ``type`` (``/problems/not-found`` -> :class:`NotFound`), falling back on the HTTP
status. Transport failures (refused connection, timeout, a stream cut) raise
:class:`TransportError`. Catch :class:`CairnError` for all of them.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Type


class CairnError(Exception):
    """Base of every error this package raises."""


class TransportError(CairnError):
    """The server could not be reached, or the connection failed mid-request."""


class ApiError(CairnError):
    """The server answered with a problem (RFC 9457).

    ``type`` is stable (``/problems/not-found``), ``detail`` says what and where, and
    ``extra`` holds the members some problems carry (``accepts``, ``current_version``,
    ``problems``...).
    """

    def __init__(
        self,
        status: int,
        type: str,
        title: str,
        detail: str,
        extra: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(f"{status} {type}: {detail}")
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.extra: Dict[str, Any] = dict(extra or {})

    @property
    def kind(self) -> str:
        """The problem type without its prefix: ``not-found``, ``version-conflict``..."""
        return self.type.rsplit("/", 1)[-1]


class InvalidRequest(ApiError):
    """400: malformed JSON, unknown fields, a bad query or value."""


class InvalidDefinition(InvalidRequest):
    """400: a machine definition that does not load; ``problems`` lists each finding
    with its kind, file, line, column, state and message."""

    @property
    def problems(self) -> List[Dict[str, Any]]:
        return list(self.extra.get("problems") or [])


class Unauthorized(ApiError):
    """401: no token, or not a valid one."""


class Forbidden(ApiError):
    """403: beyond the token's role or namespaces, or not an approver."""


class NotFound(ApiError):
    """404: no such machine, version, instance, approval or task."""


class Conflict(ApiError):
    """409: refused because of the current state (a stale task attempt, say)."""


class VersionConflict(Conflict):
    """409: ``expected_version`` is not the instance's version."""

    @property
    def current_version(self) -> Optional[int]:
        v = self.extra.get("current_version")
        return None if v is None else int(v)


class AlreadyExists(Conflict):
    """409: an instance with that id exists."""


class IdempotencyKeyReused(Conflict):
    """409: the key was used already for a different event or payload."""


class InstanceFinished(Conflict):
    """409: the instance completed, failed or was cancelled."""


class InstancePaused(Conflict):
    """409: the instance is paused."""


class TooLarge(ApiError):
    """413: a body or payload over the server's limit."""


class UnsupportedMediaType(ApiError):
    """415."""


class Unprocessable(ApiError):
    """422: the machine refuses the event."""


class EventNotAccepted(Unprocessable):
    """422: no transition takes this event in the current configuration; ``accepts``
    lists the events that would be taken."""

    @property
    def accepts(self) -> List[str]:
        return list(self.extra.get("accepts") or [])


class EventRefused(Unprocessable):
    """422: the event was taken but refused (a guard, a schema, an action failed)."""


class ReservedEvent(Unprocessable):
    """422: events such as ``task.done`` or ``approve`` are the server's own."""


class Unavailable(ApiError):
    """503: a limit was hit or the store is busy; retry later."""


class TooManyStreams(Unavailable):
    """503: too many event streams are open."""


class ServerError(ApiError):
    """500: an internal failure, logged by the server."""


class Timeout(ServerError):
    """504 (or 408): the request took longer than the server allows."""


class NotSupported(ServerError):
    """501: this server's store does not do that (online backup on PostgreSQL)."""


# One entry per problem type of the server (cairn-api's `ProblemType`, listed in the
# OpenAPI document); a test keeps the two equal.
_BY_TYPE: Dict[str, Type[ApiError]] = {
    "invalid-request": InvalidRequest,
    "invalid-definition": InvalidDefinition,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "forbidden-host": Forbidden,
    "cross-site": Forbidden,
    "not-found": NotFound,
    "conflict": Conflict,
    "version-conflict": VersionConflict,
    "already-exists": AlreadyExists,
    "idempotency-key-reused": IdempotencyKeyReused,
    "instance-finished": InstanceFinished,
    "instance-paused": InstancePaused,
    "too-large": TooLarge,
    "uri-too-long": InvalidRequest,
    "method-not-allowed": InvalidRequest,
    "unsupported-media-type": UnsupportedMediaType,
    "event-not-accepted": EventNotAccepted,
    "event-refused": EventRefused,
    "reserved-event": ReservedEvent,
    "unavailable": Unavailable,
    "too-many-streams": TooManyStreams,
    "internal": ServerError,
    "timeout": Timeout,
    "not-supported": NotSupported,
}

_BY_STATUS: Dict[int, Type[ApiError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    415: UnsupportedMediaType,
    422: Unprocessable,
    503: Unavailable,
}


def from_response(status: int, body: Any, text: str) -> ApiError:
    """The exception for an error answer: a problem document, or any other body."""
    if isinstance(body, dict) and isinstance(body.get("type"), str):
        type_ = body["type"]
        title = str(body.get("title") or "")
        detail = str(body.get("detail") or title or text)
        extra = {k: v for k, v in body.items() if k not in ("type", "title", "status", "detail")}
    else:
        type_ = "about:blank"
        title = ""
        detail = text.strip()[:500] or f"HTTP {status}"
        extra = {}
    cls = _BY_TYPE.get(type_.rsplit("/", 1)[-1])
    if cls is None:
        cls = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    return cls(status, type_, title, detail, extra)
