"""Test-wide fixtures: `figures` collects measured numbers and prints them after the run."""

from __future__ import annotations

from collections.abc import Callable

import pytest

# Fixtures for real containers (a private Docker daemon and the Dagger test stand-in), shared by
# tests/dagger and the hardening suites; the daemon starts once per session, when first needed.
pytest_plugins = ["tests.dagger_fixtures"]

_FIGURES = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_FIGURES] = []


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record a line of figures; all of them are printed in the terminal summary (even in CI)."""
    lines = request.config.stash[_FIGURES]
    return lines.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    lines = config.stash.get(_FIGURES, [])
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.write_line(line)
