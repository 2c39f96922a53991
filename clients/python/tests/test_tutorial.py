"""docs/tutorial.md as written: its files are saved from its code blocks, its commands
run in order against a real ``cairn serve``, and what it says they do is checked, so the
page cannot rot."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Tuple

from cairn_client import Client
from conftest import ROOT, Server, cairn_bin

TUTORIAL = ROOT / "docs" / "tutorial.md"
# The setup a reader does once (build, install): the test has done it already.
SETUP = ("cargo ", "export ", "pip ")


def blocks(text: str) -> List[Tuple[str, str]]:
    """Every fenced block: (info string, body)."""
    return re.findall(r"^```([^\n]*)\n(.*?)^```", text, re.S | re.M)


def test_the_tutorial_runs_as_written(fresh_server: Server, tmp_path: Path) -> None:
    env = dict(os.environ, CAIRN_SERVER=fresh_server.url)
    outputs: List[Tuple[str, str]] = []
    commands = 0
    for info, body in blocks(TUTORIAL.read_text()):
        words = info.split()
        if len(words) == 2:
            # `yaml brief.yaml`: a file the reader saves.
            (tmp_path / words[1]).write_text(body)
            continue
        if words != ["sh"]:
            continue
        for line in body.splitlines():
            line = line.strip()
            if not line or line.startswith("#") or line.startswith(SETUP):
                continue
            commands += 1
            args = shlex.split(line)
            if args[0] == "sleep":
                time.sleep(float(args[1]))
                continue
            if args[0] == "cairn":
                args = [cairn_bin(), *args[1:]]
            elif args[0] == "python":
                args = [sys.executable, *args[1:]]
            # `sed ... > file` runs as the reader's shell would, with its redirection.
            out = subprocess.run(
                line if args[0] == "sed" else args,
                shell=args[0] == "sed",
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert out.returncode == 0, f"`{line}` exited {out.returncode}: {out.stdout}{out.stderr}"
            outputs.append((line, out.stdout + out.stderr))
    assert commands >= 15, f"only {commands} commands found in {TUTORIAL}"


    def said(command: str) -> List[str]:
        return [o for line, o in outputs if line == command]

    assert "warning[" not in said("cairn validate brief.yaml --strict")[0]
    # `show` as the page describes it: two pending tasks, then an approval, then done.
    shown = said("cairn show r1")
    assert len(shown) == 3, shown
    assert shown[0].count("  task ") == 2 and ": pending at attempt" in shown[0], shown[0]
    assert "waits for approval" in shown[1], shown[1]
    assert "r1  brief@1  completed" in shown[2] and "configuration: published" in shown[2], shown[2]
    with Client(fresh_server.url) as c:
        r1 = c.get("r1")
        assert (r1.status, r1.configuration) == ("completed", ["published"]), r1
        assert r1.context["approved_by"] == "you"
        assert r1.context["web"] == ["web: statecharts explained"]
        assert r1.context["papers"] == ["paper: a survey of statecharts"]
        history = c.history("r1")
        done = sorted(t.addressed_to or "" for t in history if t.event == "task.done")
        assert done == ["researching.papers.searching", "researching.web.searching"], done
        attempts = [t.payload.get("outcome") for t in history if t.kind == "attempt"]
        assert sorted(attempts) == ["completed", "completed", "failed"], attempts
        r2 = c.get("r2")
        assert (r2.status, r2.configuration) == ("cancelled", ["expired"]), r2
        assert r2.machine_version == 2 and r1.machine_version == 1
