"""A real ``cairn serve`` for the tests: the binary built by ``cargo build -p cairn``
(``TEST_CAIRN_BIN`` overrides), a fresh data directory, a free port on 127.0.0.1. Each test
gets its own namespace and queue, so tests share one server without seeing each other.
"""

from __future__ import annotations

import os
import signal
import subprocess
import ctypes
import time
import uuid
from pathlib import Path
from typing import Iterator, List, Optional

import httpx
import pytest

from cairn_client import Client

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"
_started: List[subprocess.Popen[bytes]] = []


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process dies, however it dies,
    so no server outlives the tests."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def cairn_bin() -> str:
    path = os.environ.get("TEST_CAIRN_BIN") or str(ROOT / "target" / "debug" / "cairn")
    if not Path(path).exists():
        raise RuntimeError(f"no cairn binary at {path}: run `cargo build -p cairn` or set TEST_CAIRN_BIN")
    return path


class Server:
    """One ``cairn serve`` process; ``restart`` brings it back on the same port."""

    def __init__(self, data: Path, args: Optional[List[str]] = None, env: Optional[dict[str, str]] = None) -> None:
        self.data = data
        self.args = args or []
        self.env = env
        self.listen = "127.0.0.1:0"
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.url = ""
        self.start()

    def start(self) -> None:
        env = dict(os.environ)
        env.pop("CAIRN_SERVER", None)
        env.update(self.env or {})
        deadline = time.monotonic() + 30
        log_path = self.data.parent / "serve.log"
        log = open(log_path, "ab")
        while True:
            proc = subprocess.Popen(
                [cairn_bin(), "serve", "--listen", self.listen, "--data", str(self.data), *self.args],
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            assert proc.stdout is not None
            line = proc.stdout.readline().decode()
            url = next((w for w in line.split() if w.startswith("http://")), None)
            if url and "listening" in line:
                break
            proc.wait()
            # The port may still be held by the process just killed: try again.
            if time.monotonic() > deadline:
                raise RuntimeError(f"cairn serve did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        log.close()
        _started.append(proc)
        self.proc = proc
        self.url = url
        self.listen = url.removeprefix("http://")

    def kill(self) -> None:
        """SIGKILL, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def restart(self) -> None:
        self.kill()
        self.start()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``cairn --server URL ARGS``."""
        env = dict(os.environ, CAIRN_SERVER=self.url)
        out = subprocess.run([cairn_bin(), *args], env=env, capture_output=True, text=True, timeout=60)
        if check and out.returncode != 0:
            raise AssertionError(f"cairn {' '.join(args)} exited {out.returncode}: {out.stderr}")
        return out


def _kill_all() -> None:
    for p in _started:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("cairn") / "data")
    yield s
    _kill_all()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """A server of the test's own, for tests that kill it."""
    s = Server(tmp_path / "data")
    yield s
    s.kill()


@pytest.fixture
def ns() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def client(server: Server, ns: str) -> Iterator[Client]:
    with Client(server.url, namespace=ns) as c:
        yield c


def jobs_machine(queue: str, max_attempts: int = 3, timeout: str = "1m") -> str:
    """A machine with one task state: done with the task's output, failed with its error,
    or stopped by an event (which cancels the task)."""
    return f"""
machine: jobs
context: {{}}
initial: working
states:
  working:
    task:
      queue: {queue}
      action: work
      input: "context"
      timeout: {timeout}
      retry: {{ max_attempts: {max_attempts}, backoff: fixed, initial: 50ms }}
    on:
      task.done: {{ target: done, assign: {{ result: "event.payload" }} }}
      task.failed: {{ target: failed, assign: {{ error: "event.payload.error" }} }}
      stop: stopped
  done: {{ type: final }}
  stopped: {{ type: final }}
  failed: {{ type: final, status: failed }}
"""


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _kill_all()

