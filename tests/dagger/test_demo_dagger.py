"""The demo runs its dagger tool when a Dagger session is available (here: the test stand-in)."""

from __future__ import annotations

import os

import trio

from tests.dagger_fixtures import DaggerBackend
from tests.processes import CLI, ROOT


async def run_demo(env: dict[str, str], nodes: int) -> str:
    """`praxis-node demo` with this environment; its stdout, after asserting it succeeded."""
    with trio.fail_after(180):
        out = await trio.run_process([*CLI, "demo", "--nodes", str(nodes)], cwd=ROOT, env=env,
                                     capture_stdout=True, capture_stderr=True, check=False)
    text = out.stdout.decode()
    assert out.returncode == 0, text + out.stderr.decode()
    return text


async def test_demo_runs_a_dagger_tool_across_the_mesh(dagger_backend: DaggerBackend) -> None:
    text = await run_demo({**os.environ, **dagger_backend.env}, nodes=3)
    assert "6 of 6 cross-node calls succeeded" in text
    row = next(line for line in text.splitlines() if line.startswith("container_word_count"))
    assert " 4 " in f" {row} "  # "one two three four" counted inside a busybox container
    assert "dagger tool skipped" not in text


async def test_demo_says_why_the_dagger_tool_is_skipped() -> None:
    text = await run_demo({k: v for k, v in os.environ.items() if not k.startswith("DAGGER_SESSION_")}, nodes=2)
    assert "dagger tool skipped: no Dagger engine session" in text
    assert "5 of 5 cross-node calls succeeded" in text
