"""TEST STAND-IN: runs the stand-in's containers through a private Docker daemon.

Every container runs with `--rm --network none --pull never`; environment values reach the
container through the docker CLI's own environment (`-e NAME`), so they never appear on a
command line. A cancelled run (the client went away, or its deadline passed) kills the
container by name before the run is over, so nothing keeps running behind the caller.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import trio

from tests.dagger_standin.model import ContainerState, ExecResult

MAX_OUTPUT = 16 * 1024 * 1024
# Variables the docker CLI itself reads: passed as -e NAME=VALUE instead of through its env.
_CLI_OWN_ENV_PREFIX = "DOCKER_"


@dataclass
class ContainerStats:
    running: int = 0
    max_running: int = 0
    started: int = 0
    killed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "running": self.running,
            "max_running": self.max_running,
            "started": self.started,
            "killed": self.killed,
        }


@dataclass
class DockerRunner:
    docker: str  # path of the docker CLI
    host: str  # unix:///... of the private daemon
    state_dir: Path
    stats: ContainerStats = field(default_factory=ContainerStats)

    def _cli_env(self) -> dict[str, str]:
        home = self.state_dir / "docker-cli-home"
        home.mkdir(parents=True, exist_ok=True)
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "DOCKER_CONFIG": str(home),
        }

    async def image_id(self, image: str) -> str | None:
        """The image's ID in the private daemon, or None when the daemon does not have it."""
        with trio.fail_after(30):
            done = await trio.run_process(
                [
                    self.docker,
                    "--host",
                    self.host,
                    "image",
                    "inspect",
                    "--format",
                    "{{.Id}}",
                    image,
                ],
                env=self._cli_env(),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        if done.returncode != 0:
            return None
        return done.stdout.decode().strip() or None

    async def run(
        self, state: ContainerState, snapshot_dirs: list[Path], secrets_by_handle: dict[str, str]
    ) -> ExecResult:
        """Run the state's exec once; mounted directories are fresh copies of their sources."""
        assert state.image is not None and state.exec_args is not None
        run_dir = self.state_dir / "runs" / f"{state.digest()[:16]}-{secrets.token_hex(4)}"
        run_dir.mkdir(parents=True)
        outputs: list[str] = []
        name = f"praxis-standin-{secrets.token_hex(8)}"
        argv = [self.docker, "--host", self.host, "run", "--rm", "--network", "none"]
        argv += ["--pull", "never", "--name", name, "--label", "praxis-test-standin=1"]
        env = self._cli_env()
        for var, (kind, value) in state.effective_env().items():
            plain = secrets_by_handle[value] if kind == "secret" else value
            if var.startswith(_CLI_OWN_ENV_PREFIX):
                argv += ["-e", f"{var}={plain}"]
            else:
                argv += ["-e", var]
                env[var] = plain
        for index, ((path, _source, read_only), src) in enumerate(
            zip(state.mounts, snapshot_dirs, strict=True)
        ):
            copy = run_dir / f"mount{index}"
            shutil.copytree(src, copy, symlinks=True)
            outputs.append(str(copy))
            argv += ["-v", f"{copy}:{path}" + (":ro" if read_only else "")]
        if state.workdir:
            argv += ["-w", state.workdir]
        argv += [state.image, *state.exec_args]

        process = await trio.lowlevel.open_process(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.stats.started += 1
        self.stats.running += 1
        self.stats.max_running = max(self.stats.max_running, self.stats.running)
        out, err = bytearray(), bytearray()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, process.stdout, out)
                nursery.start_soon(_drain, process.stderr, err)
            await process.wait()
        finally:
            if process.returncode is None:
                with trio.CancelScope(shield=True):
                    await self._kill(name)
                    with trio.move_on_after(15):
                        await process.wait()
                    if process.returncode is None:
                        process.kill()
                        await process.wait()
            self.stats.running -= 1
        return ExecResult(
            exit_code=process.returncode if process.returncode is not None else -1,
            stdout=out.decode("utf-8", errors="replace"),
            stderr=err.decode("utf-8", errors="replace"),
            outputs=outputs,
        )

    async def _kill(self, name: str) -> None:
        self.stats.killed += 1
        with trio.move_on_after(15):
            await trio.run_process(
                [self.docker, "--host", self.host, "kill", name],
                env=self._cli_env(),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )


async def _drain(pipe: trio.abc.ReceiveStream | None, into: bytearray) -> None:
    assert pipe is not None
    while True:
        chunk = await pipe.receive_some(65536)
        if not chunk:
            return
        if len(into) < MAX_OUTPUT:
            into += chunk[: MAX_OUTPUT - len(into)]
