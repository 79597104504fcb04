"""node/cli/logs.py: every log message is one escaped, bounded line (issue 8, finding 10)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import pytest

from node.cli.logs import MAX_MESSAGE, OneLineFormatter, escape_message
from tests.processes import ROOT

FORGED = "2026-01-01T12:00:00.000Z INFO    [victim] praxis.node: forged"
FORMAT = "%(asctime)s %(levelname)-7s [victim] %(name)s: %(message)s"
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) +\[victim\] [\w.]+: ")


@pytest.mark.parametrize(("raw", "escaped"), [
    ("a\nb", "a\\nb"),
    ("a\rb", "a\\rb"),
    ("a\r\nb", "a\\r\\nb"),
    ("a\tb", "a\\tb"),
    ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),
    ("nul\x00bel\x07del\x7f", "nul\\x00bel\\x07del\\x7f"),
    ("nel\x85csi\x9b", "nel\\x85csi\\x9b"),
    ("line\u2028para\u2029end", "line\\u2028para\\u2029end"),
    ("vt\x0bff\x0cfs\x1c", "vt\\x0bff\\x0cfs\\x1c"),
])
def test_control_characters_are_escaped(raw, escaped):
    assert escape_message(raw) == escaped
    assert len(escape_message(raw).splitlines()) == 1


def test_printable_text_is_left_alone():
    text = "peer 12D3KooW (node-1) offers 2 tool(s): echo, add — ünïcødé ✓ \\n stays"
    assert escape_message(text) == text


def test_a_long_message_is_cut_and_says_so():
    out = escape_message("x" * 3000)
    assert out == "x" * MAX_MESSAGE + f"... ({3000 - MAX_MESSAGE} more characters)"
    assert len(out) < MAX_MESSAGE + 40


def test_the_cut_counts_escaped_characters_and_leaves_no_control_character():
    out = escape_message("\n" * 3000)  # 6000 characters once escaped
    assert out.startswith("\\n" * (MAX_MESSAGE // 2))
    assert out.endswith(f"... ({6000 - MAX_MESSAGE} more characters)")
    assert len(out) < MAX_MESSAGE + 40
    assert len(out.splitlines()) == 1


def record(msg: str, *args: object, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("praxis.node", logging.INFO, __file__, 1, msg, args, exc_info)


def test_formatter_escapes_what_the_arguments_bring_in():
    formatter = OneLineFormatter(FORMAT)
    out = formatter.format(record("call %s from %s refused", f"echo\n{FORGED}\r\x1b[1A\u2028", "peer"))
    assert len(out.splitlines()) == 1
    assert LINE.match(out)
    assert f"call echo\\n{FORGED}\\r\\x1b[1A\\u2028 from peer refused" in out


def test_formatter_bounds_one_message():
    formatter = OneLineFormatter(FORMAT)
    out = formatter.format(record("offers: %s", ", ".join(f"tool{i}" for i in range(100_000))))
    assert len(out) < MAX_MESSAGE + 100
    assert "more characters)" in out


def test_formatter_escapes_the_message_of_a_record_with_a_traceback():
    formatter = OneLineFormatter(FORMAT)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        exc_info = sys.exc_info()
    try:
        raise RuntimeError(f"quoting a peer: x\n{FORGED}")
    except RuntimeError:
        quoting = sys.exc_info()
    out = formatter.format(record("serving %s failed", f"x\n{FORGED}", exc_info=exc_info))
    first, *traceback = out.split("\n")
    assert LINE.match(first) and f"serving x\\n{FORGED} failed" in first
    assert traceback[0] == "    Traceback (most recent call last):"  # indented under its message
    # An exception text quoting peer data cannot start a line that looks like the node's own.
    out = formatter.format(record("serving failed", exc_info=quoting))
    assert all(line.startswith("    ") for line in out.split("\n")[1:])
    assert not any(LINE.match(line) for line in out.split("\n")[1:])


def test_configure_logging_writes_one_line_per_message():
    """The CLI's logging set-up, in a child process (it replaces the root logger's handlers)."""
    forged_name = f"nope\n{FORGED}"
    script = (
        "import logging\n"
        "from node.cli.logs import configure_logging\n"
        "configure_logging('INFO', 'victim')\n"
        "log = logging.getLogger('praxis.node')\n"
        f"log.info('call %s refused', {forged_name!r})\n"
        "log.warning('name %s', 'a\\u2028b\\x1b[2Kc\\rd')\n"
        "log.info('%s', 'y' * 5000)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=30, check=True)
    lines = done.stderr.decode("utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == 4, lines
    assert all(LINE.match(line) for line in lines[:-1]), lines
    assert lines[0].endswith(f"praxis.node: call nope\\n{FORGED} refused")
    assert lines[1].endswith("praxis.node: name a\\u2028b\\x1b[2Kc\\rd")
    assert lines[2].endswith(f"... ({5000 - MAX_MESSAGE} more characters)")


def test_json_logs_are_one_object_a_line_with_the_message_escaped_and_bounded():
    script = (
        "import logging\n"
        "from node.cli.logs import configure_logging\n"
        "configure_logging('INFO', 'victim', 'json')\n"
        "log = logging.getLogger('praxis.node')\n"
        "log.info('call %s refused', 'nope\\nforged\\x1b[2K')\n"
        "log.warning('%s', 'y' * 5000)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=30, check=True)
    lines = done.stderr.decode("utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == 3, lines
    first, second = (json.loads(line) for line in lines[:-1])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert {k: first[k] for k in ("level", "logger", "message")} == {
        "level": "INFO", "logger": "praxis.node", "message": "call nope\\nforged\\x1b[2K refused"}
    assert second["level"] == "WARNING" and second["message"].endswith(f"({5000 - MAX_MESSAGE} more characters)")
