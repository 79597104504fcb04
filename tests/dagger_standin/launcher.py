"""TEST STAND-IN support: start the stand-in as its own process, and talk to its stats route.

`StandinProcess.start()` runs `python -m tests.dagger_standin`, waits (bounded) for its
`{"port": N}` line, and `stop()` ends it by its PID. `env()` is what points the dagger-io SDK
at it: DAGGER_SESSION_PORT and DAGGER_SESSION_TOKEN.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0


class StandinProcess:
    def __init__(self, docker: str, docker_host: str, state_dir: Path, port: int = 0) -> None:
        self.docker = docker
        self.docker_host = docker_host
        self.state_dir = state_dir
        self.token = secrets.token_hex(16)
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "tests.dagger_standin",
            "--docker",
            self.docker,
            "--docker-host",
            self.docker_host,
            "--state-dir",
            str(self.state_dir),
            "--port",
            str(self.port),
        ]
        env = dict(os.environ, DAGGER_STANDIN_TOKEN=self.token)
        self.process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=None
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], START_TIMEOUT)
        line = self.process.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError(f"the Dagger stand-in did not start within {START_TIMEOUT} s")
        self.port = int(json.loads(line)["port"])

    def env(self) -> dict[str, str]:
        return {"DAGGER_SESSION_PORT": str(self.port), "DAGGER_SESSION_TOKEN": self.token}

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def _call(self, method: str, path: str) -> dict[str, Any]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        import base64

        request.add_header(
            "Authorization", "Basic " + base64.b64encode(f"{self.token}:".encode()).decode()
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            data: dict[str, Any] = json.loads(response.read())
        return data

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_standin/stats")

    def reset_stats(self) -> dict[str, Any]:
        return self._call("POST", "/_standin/reset")


def wait_until(predicate: Any, timeout: float) -> bool:
    """Poll a condition about a daemon's state, bounded by `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())
