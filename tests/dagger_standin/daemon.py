"""TEST STAND-IN support: a private Docker daemon and a locally built busybox:latest image.

The daemon listens only on a private unix socket and keeps its data, exec state and pidfile in
a folder of its own. It ALWAYS runs with `--bridge none --iptables=false` (no networks are
created and no firewall rules are touched); containers run with `--network none`. It is stopped
by its PID. busybox:latest is built from Debian's busybox-static (installed by
`scripts/setup-containers`): the static binary plus its applet links, `docker import`ed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

DOCKERD = "/usr/sbin/dockerd"
BUSYBOX = "/bin/busybox"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def docker_cli() -> str | None:
    """Debian's docker CLI (matching its daemon) when present, else whichever is on PATH."""
    return "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else shutil.which("docker")


def missing_requirements() -> str | None:
    """Why private containers cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "a private Docker daemon needs root"
    if not os.path.exists(DOCKERD) or docker_cli() is None:
        return "docker.io is not installed (run scripts/setup-containers as root)"
    if not _is_static_busybox(BUSYBOX):
        return "busybox-static is not installed (run scripts/setup-containers as root)"
    return None


def _is_static_busybox(path: str) -> bool:
    if not os.path.exists(path):
        return False
    done = subprocess.run(["dpkg-query", "-S", path], capture_output=True, text=True, check=False)
    return "busybox-static" in done.stdout


class PrivateDockerDaemon:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.docker = docker_cli() or "docker"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = root / "dockerd.log"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        argv = [
            DOCKERD,
            "--host",
            self.host,
            "--data-root",
            str(self.root / "data"),
            "--exec-root",
            str(self.root / "exec"),
            "--pidfile",
            str(self.root / "docker.pid"),
            "--bridge",
            "none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--userland-proxy=false",
            "--log-level",
            "warn",
        ]
        print(f"[dagger tests] starting private dockerd: {' '.join(argv)}", flush=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:  # bounded wait for the daemon's socket and API
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"dockerd exited with {self.process.returncode}; see {self.log_path}"
                )
            if self.socket.exists() and self.docker_ok(
                ["version", "--format", "{{.Server.Version}}"]
            ):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"dockerd did not answer within {START_TIMEOUT} s; see {self.log_path}")

    def docker_ok(self, args: list[str]) -> bool:
        done = subprocess.run(
            [self.docker, "--host", self.host, *args], capture_output=True, timeout=30, check=False
        )
        return done.returncode == 0

    def stop(self) -> None:
        """Stop the daemon by its PID (it stops its own containerd and containers)."""
        if self.process is None or self.process.poll() is not None:
            return
        print(f"[dagger tests] stopping private dockerd (pid {self.process.pid})", flush=True)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)

    def ensure_busybox(self, cache_dir: Path) -> None:
        """Import busybox:latest (built from the host's busybox-static) unless present."""
        if self.docker_ok(["image", "inspect", "busybox:latest"]):
            return
        tarball = busybox_rootfs(cache_dir)
        with open(tarball, "rb") as fh:
            subprocess.run(
                [
                    self.docker,
                    "--host",
                    self.host,
                    "import",
                    "-c",
                    "ENV PATH=/bin",
                    "-",
                    "busybox:latest",
                ],
                stdin=fh,
                capture_output=True,
                timeout=60,
                check=True,
            )


def busybox_rootfs(cache_dir: Path) -> Path:
    """A rootfs tarball of busybox-static with its applet links, cached by the binary's digest."""
    with open(BUSYBOX, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()[:16]
    tarball = cache_dir / f"busybox-rootfs-{digest}.tar"
    if tarball.exists():
        return tarball
    cache_dir.mkdir(parents=True, exist_ok=True)
    listed = subprocess.run(
        [BUSYBOX, "--list"], capture_output=True, text=True, check=True, timeout=10
    )
    applets = [a for a in listed.stdout.split() if a and a != "busybox" and "/" not in a]
    tmp = tarball.with_suffix(f".{os.getpid()}.tmp")
    with tarfile.open(tmp, "w") as tar:
        for folder in ("bin", "tmp", "etc", "root", "proc", "sys", "dev"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in applets:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(info)
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size, info.mode = len(passwd), 0o644
        import io

        tar.addfile(info, io.BytesIO(passwd))
    tmp.rename(tarball)
    return tarball
