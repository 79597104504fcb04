"""Benchmark: per-call overhead of a dagger tool call through the TEST STAND-IN, compared with
`docker run --rm --network none busybox:latest <same command>` on the same private daemon,
measured in the same run (alternating, median of N)."""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import trio

from node.config import DaggerEngineSettings, ToolContract
from node.tools.engines.dagger import DaggerEngine
from tests.dagger_standin.daemon import PrivateDockerDaemon, missing_requirements
from tests.dagger_standin.launcher import StandinProcess

REPO = Path(__file__).resolve().parents[2]
COMMAND = ["sh", "-c", "echo hello"]


async def measure(
    daemon: PrivateDockerDaemon, standin: StandinProcess, n: int, work: Path
) -> tuple[list[float], list[float]]:
    engine = DaggerEngine(DaggerEngineSettings(), work, environ=standin.env())
    contract = ToolContract.model_validate(
        {"name": "bench", "engine": "dagger", "engineSpec": {"image": "busybox:latest", "command": COMMAND}}
    )
    argv = [daemon.docker, "--host", daemon.host, "run", "--rm", "--network", "none", "busybox:latest", *COMMAND]
    via_dagger: list[float] = []
    via_docker: list[float] = []
    try:
        for i in range(n + 1):  # the first round warms up (connection, schema) and is not counted
            t0 = time.perf_counter()
            result = await engine.execute(contract, {}, trio.current_time() + 60)
            t1 = time.perf_counter()
            with trio.fail_after(60):
                done = await trio.run_process(argv, capture_stdout=True)
            t2 = time.perf_counter()
            assert result.text_output() == done.stdout.decode() == "hello\n"
            if i:
                via_dagger.append(t1 - t0)
                via_docker.append(t2 - t1)
    finally:
        await engine.aclose()
    return via_dagger, via_docker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=15, help="calls of each kind (1..200)")
    n = max(1, min(200, parser.parse_args().n))
    reason = missing_requirements()
    if reason:
        raise SystemExit(f"bench-dagger: cannot run: {reason}")
    root = Path(tempfile.mkdtemp(prefix="praxis-bench-"))
    daemon = PrivateDockerDaemon(root)
    daemon.start()
    standin = None
    try:
        daemon.ensure_busybox(REPO / ".cache")
        standin = StandinProcess(daemon.docker, daemon.host, root / "standin")
        standin.start()
        (root / "work").mkdir()
        dagger_s, docker_s = trio.run(measure, daemon, standin, n, root / "work")
    finally:
        if standin is not None:
            standin.stop()
        daemon.stop()
        shutil.rmtree(root, onerror=lambda _f, path, exc: print(f"could not remove {path}: {exc}"))
    md, mk = statistics.median(dagger_s), statistics.median(docker_s)
    print(f"command: {' '.join(COMMAND)}   calls of each kind: {n}")
    print(f"dagger tool call (DaggerEngine -> SDK -> test stand-in -> docker): median {md * 1000:7.1f} ms")
    print(f"docker run --rm --network none (same daemon, same run):             median {mk * 1000:7.1f} ms")
    print(f"per-call overhead: {(md - mk) * 1000:+.1f} ms  (ratio {md / mk:.2f}x)")


if __name__ == "__main__":
    main()
