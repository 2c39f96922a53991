"""Pieces both clients share: settings from the environment, turning a :class:`Call`
into request arguments and an answer into a value or an exception, retry delays and
the Server-Sent Events decoder."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

import httpx

from . import errors
from ._calls import Call, T, dumps
from ._models import LogEvent

DEFAULT_URL = "http://127.0.0.1:7878"
USER_AGENT = "cairn-client-python/0.1.0"


def settings(
    url: Optional[str], token: Optional[str]
) -> Tuple[str, Dict[str, str]]:
    """The base URL and default headers: arguments first, then ``CAIRN_SERVER`` and
    ``CAIRN_TOKEN``, as the CLI reads them."""
    base = (url or os.environ.get("CAIRN_SERVER") or DEFAULT_URL).rstrip("/")
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    token = token if token is not None else os.environ.get("CAIRN_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return base, headers


def request_args(call: Call[Any], namespace: str) -> Dict[str, Any]:
    params: Dict[str, Any] = {"namespace": namespace}
    params.update(call.params)
    args: Dict[str, Any] = {"method": call.method, "url": call.path, "params": params}
    if call.content is not None:
        args["content"] = call.content
        args["headers"] = {"Content-Type": call.content_type or "application/json"}
    elif call.json is not None:
        args["content"] = dumps(call.json)
        args["headers"] = {"Content-Type": "application/json"}
    elif call.method == "POST":
        # A state change always says it is JSON: the server refuses one without (no
        # cross-site form can send that content type).
        args["content"] = b""
        args["headers"] = {"Content-Type": "application/json"}
    return args


def partial_path(path: Union["os.PathLike[str]", str]) -> Tuple[Path, Path]:
    """Where a download goes while it runs, and where it ends."""
    final = Path(path)
    if final.exists():
        raise FileExistsError(f"{final} exists; choose a new file")
    return final.with_name(final.name + ".partial"), final


def read(call: Call[T], response: httpx.Response) -> T:
    """The call's value, or the problem the server answered, raised."""
    if response.status_code >= 400:
        raise problem(response)
    if response.status_code == 204 or not response.content:
        return call.parse(None)
    if call.text:
        return call.parse(response.text)
    try:
        body = response.json()
    except ValueError as e:
        raise errors.ApiError(
            response.status_code, "about:blank", "", f"the server's answer is not JSON: {e}"
        ) from None
    return call.parse(body)


def problem(response: httpx.Response) -> errors.ApiError:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    return errors.from_response(response.status_code, body, response.text)


def retriable(exc: BaseException) -> bool:
    """A failure worth another try of a safe call: the network, or a busy server."""
    if isinstance(exc, errors.TransportError):
        return True
    return isinstance(exc, errors.Unavailable) and not isinstance(exc, errors.TooManyStreams)


def backoff(attempt: int, base: float = 0.2, cap: float = 5.0) -> float:
    """Exponential with full jitter: attempt 0 waits up to ``base``."""
    return random.uniform(0, min(cap, base * (2**attempt)))


class SseDecoder:
    """Server-Sent Events, line by line (the WHATWG rules Cairn's stream needs: ``id``,
    ``event``, multi-line ``data``, comments as keep-alives)."""

    def __init__(self) -> None:
        self._data: List[str] = []
        self._id: Optional[str] = None

    def feed(self, line: str) -> Optional[LogEvent]:
        line = line.rstrip("\r\n")
        if line == "":
            if not self._data:
                return None
            data = "\n".join(self._data)
            self._data = []
            return LogEvent.from_json(json.loads(data))
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None

    def events(self, lines: Iterable[str]) -> Iterator[LogEvent]:
        for line in lines:
            ev = self.feed(line)
            if ev is not None:
                yield ev


def stream_params(
    namespace: str, machine: Optional[str], instance: Optional[str]
) -> Dict[str, str]:
    params = {"namespace": namespace}
    if machine is not None:
        params["machine"] = machine
    if instance is not None:
        params["instance"] = instance
    return params


def resume_headers(last: Optional[int]) -> Mapping[str, str]:
    return {"Accept": "text/event-stream"} | ({} if last is None else {"Last-Event-ID": str(last)})
