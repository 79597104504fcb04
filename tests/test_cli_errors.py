"""The CLI's mistakes and failures (issue 12): one line on stderr with a hint, the same through
`--node` and `--peer`, the README's exit codes, a dead port reported at once, no traceback
unless `--debug`. Through the real CLI as a subprocess, against real node processes on
127.0.0.1. Plus the pure pieces: the exit code of each kind of error, the unknown-tool hint.
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import socket
import subprocess

import trio

from node.cli.errors import explain
from node.cli.main import build_parser
from node.cli.remote import ToolRow, unknown_tool_message
from protocols.errors import ContractError, EngineUnavailable, NoProvider, PeerUnreachable, ToolExecutionError
from tests.processes import CLI, ROOT, node_process, write_config

ECHO = {"name": "echo", "engine": "python", "engineSpec": {"callable": "tests.sample_tools:echo"},
        "params": [{"name": "text", "type": "string", "required": True}]}
UNKNOWN_PEER = "12D3KooWHRyfTBKcjkqjNk5UZarJhzT7rXZYfr4DmaCWJgen62Xk"
TOKEN = "s3cret-token"


async def cli(*args: str, timeout: float = 60, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[bytes]:
    """The CLI as a user runs it; `timeout` bounds the test, it is not the command's --timeout."""
    environment = {k: v for k, v in os.environ.items() if k != "PRAXIS_MCP_TOKEN"}
    with trio.fail_after(timeout):
        return await trio.run_process([*CLI, *args], cwd=ROOT, capture_stdout=True, capture_stderr=True,
                                      check=False, env={**environment, **(env or {})})


def one_line(out: subprocess.CompletedProcess[bytes]) -> str:
    """stderr, which must be exactly one line: no traceback, no library chatter."""
    err = out.stderr.decode()
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: "), err
    return err.strip()


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_of(url_or_addr: str) -> str:
    return url_or_addr.split("/tcp/")[1].split("/")[0] if "/tcp/" in url_or_addr else \
        url_or_addr.rsplit(":", 1)[1].split("/")[0]


async def test_mistakes_with_node_and_peer_give_one_line_with_a_hint(tmp_path):
    cfg = write_config(tmp_path / "a", "node-a", [ECHO], [], mcp={"enabled": True, "port": 0})
    async with node_process(cfg) as (_, a):
        url, addr = a["mcpUrl"], a["addrs"][0]
        base = url.removesuffix("/mcp")

        # An unknown tool: the same line through both ways, with the closest name or the list.
        for where in (("--node", url), ("--peer", addr)):
            out = await cli("call", *where, "ecoh", "text=hi")
            assert (out.returncode, one_line(out)) == (1, "error: unknown tool 'ecoh'; did you mean 'echo'?")
            out = await cli("call", *where, "nosuch", "x=1")
            assert (out.returncode, one_line(out)) == (1, "error: unknown tool 'nosuch'; the node knows echo")

        # A URL without the endpoint's path.
        for wrong in (base, base + "/", base + "/mcp/", base + "/api"):
            out = await cli("tools", "--node", wrong)
            assert out.returncode == 2, wrong
            assert one_line(out) == f"error: the endpoint path is /mcp: try {base}/mcp", wrong
        # A URL without http://, a multiaddr given to --node, a URL given to --peer.
        out = await cli("tools", "--node", base.removeprefix("http://") + "/mcp")
        assert (out.returncode, one_line(out)) == (2, f"error: --node takes a URL: try {url}")
        out = await cli("tools", "--node", addr)
        assert out.returncode == 2 and f"is a multiaddr: use --peer {addr}" in one_line(out)
        out = await cli("tools", "--peer", url)
        assert out.returncode == 2 and f"use --node {url}" in one_line(out)
        # The p2p port given to --node; the MCP port given to --peer.
        p2p_port = port_of(addr)
        out = await cli("tools", "--node", f"http://127.0.0.1:{p2p_port}/mcp")
        assert out.returncode == 2 and "is a node's p2p (libp2p) port, not its MCP endpoint" in one_line(out)
        out = await cli("tools", "--peer", f"/ip4/127.0.0.1/tcp/{port_of(url)}/p2p/{a['peerId']}")
        assert out.returncode == 3 and f"use --node {url}" in one_line(out)
        # The right port with another node's peer ID.
        out = await cli("tools", "--peer", f"/ip4/127.0.0.1/tcp/{p2p_port}/p2p/{UNKNOWN_PEER}")
        assert out.returncode == 3 and "the node at that address has another peer ID" in one_line(out)


async def test_a_token_the_endpoint_wants_is_asked_for(tmp_path):
    cfg = write_config(tmp_path / "a", "node-a", [ECHO], [], mcp={"enabled": True, "port": 0, "token": TOKEN})
    async with node_process(cfg) as (_, a):
        url = a["mcpUrl"]
        out = await cli("tools", "--node", url)
        assert (out.returncode, one_line(out)) == (2, "error: 401 from the endpoint: pass --token or set "
                                                      "PRAXIS_MCP_TOKEN")
        out = await cli("call", "--node", url, "--token", "wrong", "echo", "text=hi")
        assert out.returncode == 2 and "401 from the endpoint: it refused the token" in one_line(out)
        assert "wrong" not in out.stderr.decode()  # a token is never echoed
        out = await cli("call", "--node", url, "--token", TOKEN, "echo", "text=hi")
        assert (out.returncode, out.stdout) == (0, b"hi\n"), out.stderr.decode()
        out = await cli("call", "--node", url, "echo", "text=hi", env={"PRAXIS_MCP_TOKEN": TOKEN})
        assert (out.returncode, out.stdout) == (0, b"hi\n"), out.stderr.decode()


async def test_dead_ports_are_reported_at_once_in_one_line():
    """Nothing listens: both ways say so at once (the command's --timeout is 300 s; the test
    allows 60), and py-libp2p's own "Failed to open TCP stream" lines stay out of the output."""
    port = free_port()
    out = await cli("tools", "--node", f"http://127.0.0.1:{port}/mcp", "--timeout", "300")
    assert out.returncode == 3
    assert one_line(out) == (f"error: cannot reach http://127.0.0.1:{port}/mcp: connection refused (nothing "
                             f"listens at 127.0.0.1:{port}: is the node running, with its MCP endpoint on?)")
    addr = f"/ip4/127.0.0.1/tcp/{port}/p2p/{UNKNOWN_PEER}"
    out = await cli("call", "--peer", addr, "echo", "text=x", "--timeout", "300")
    assert out.returncode == 3
    assert one_line(out) == (f"error: --peer {addr}: connection refused (nothing listens at that address: "
                             "is the node running?)")


async def test_a_provider_that_left_is_one_line_both_ways(tmp_path):
    a_cfg = write_config(tmp_path / "a", "node-a", [ECHO], [])
    async with node_process(a_cfg) as (proc_a, a):
        b_cfg = write_config(tmp_path / "b", "node-b", [], a["addrs"][:1], mcp={"enabled": True, "port": 0})
        async with node_process(b_cfg) as (_, b):
            with trio.fail_after(30):
                while b"echo" not in (await cli("tools", "--node", b["mcpUrl"])).stdout:
                    await trio.sleep(0.1)  # A's card reaches B asynchronously: poll B
            proc_a.send_signal(signal.SIGKILL)
            await proc_a.wait()
            with trio.fail_after(30):
                while b"echo" in (await cli("tools", "--node", b["mcpUrl"])).stdout:
                    await trio.sleep(0.1)  # B notices the closed connection: poll B
            for where in (("--node", b["mcpUrl"]), ("--peer", b["addrs"][0])):
                out = await cli("call", *where, "echo", "text=x")
                assert out.returncode == 1, where
                assert one_line(out).startswith("error: unknown tool 'echo': the node knows no tools yet"), where


async def test_a_call_past_the_timeout_is_one_line_both_ways(tmp_path):
    slow = {"name": "slow", "engine": "python", "engineSpec": {"callable": "tests.sample_tools:slow"},
            "params": [{"name": "seconds", "type": "number", "required": True}]}
    cfg = write_config(tmp_path / "a", "node-a", [slow], [], mcp={"enabled": True, "port": 0})
    async with node_process(cfg) as (_, a):
        for where in (("--node", a["mcpUrl"]), ("--peer", a["addrs"][0])):
            out = await cli("call", *where, "slow", "seconds=600", "--timeout", "2")
            assert out.returncode == 1, where
            assert one_line(out) == "error: no result from 'slow' within 2 s (--timeout)", where


async def test_debug_shows_the_traceback_and_keeps_the_exit_code():
    url = f"http://127.0.0.1:{free_port()}/mcp"
    for args in (("--debug", "tools", "--node", url), ("tools", "--node", url, "--debug")):
        out = await cli(*args)
        err = out.stderr.decode()
        assert out.returncode == 3 and "Traceback (most recent call last)" in err, args
        assert err.splitlines()[-1].startswith(f"error: cannot reach {url}: connection refused"), args


async def test_ctrl_c_exits_130_without_a_traceback():
    """A command waiting on a node that never answers, interrupted: exit 130, nothing else."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        proc = await trio.lowlevel.open_process([*CLI, "tools", "--node", f"http://127.0.0.1:{port}/mcp"],
                                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            with trio.fail_after(30):
                held, _ = await trio.to_thread.run_sync(silent.accept)  # the CLI has connected and waits
            proc.send_signal(signal.SIGINT)
            with trio.fail_after(30):
                await proc.wait()
            assert proc.stderr is not None
            err = await proc.stderr.receive_some(65536)
            held.close()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 130, err
    assert b"Traceback" not in (err or b"")


async def test_version_and_log_levels():
    out = await cli("--version")
    assert (out.returncode, out.stdout.decode()) == (0, f"praxis-node {importlib.metadata.version('praxis-node')}\n")
    out = await cli("run", "-c", "node.yaml", "--log-level", "verbose")
    assert out.returncode == 2
    assert "--log-level: 'verbose' is not a log level: use DEBUG, INFO, WARNING or ERROR" in out.stderr.decode()
    for given in ("debug", "Info", "WARNING", "error"):
        assert build_parser().parse_args(["run", "-c", "x", "--log-level", given]).log_level == given.upper()
    assert build_parser().parse_args(["mcp", "-c", "x", "--log-level", "debug"]).log_level == "DEBUG"


async def test_a_missing_config_exits_2_for_every_command(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    for command in ("run", "check", "id", "mcp"):
        out = await cli(command, "-c", missing)
        assert out.returncode == 2, (command, out.stderr.decode())
        assert "Traceback" not in out.stderr.decode() and "nope.yaml" in out.stderr.decode(), command


# ----- the pure pieces ------------------------------------------------------------------------


def test_each_kind_of_error_has_its_exit_code():
    assert explain(ContractError("tool t: bad"), "run", None) == ("config error: tool t: bad", 2)
    assert explain(PeerUnreachable("gone"), "call", "x") == ("error: gone", 3)
    assert explain(NoProvider("none"), "call", "x") == ("error: none", 1)
    assert explain(EngineUnavailable("tool t: engine 'x' is not available"), "run", None) == \
        ("config error: tool t: engine 'x' is not available", 2)
    assert explain(ToolExecutionError("failed"), "call", "x") == ("error: failed", 1)
    assert explain(ValueError("not a peer address"), "call", "x") == ("error: not a peer address", 2)
    assert explain(ConnectionResetError(104, "Connection reset by peer"), "tools", "URL") == \
        ("error: cannot reach URL: Connection reset by peer", 3)
    assert explain(PermissionError(13, "Permission denied", "/k"), "run", None) == \
        ("error: run: Permission denied (/k)", 2)
    assert explain(KeyboardInterrupt(), "call", "x")[1] == 130
    assert explain(ExceptionGroup("g", [ExceptionGroup("h", [PeerUnreachable("deep")])]), "tools", "x") == \
        ("error: deep", 3)
    line, code = explain(TypeError("bug\nsecond line"), "tools", "x")
    assert code == 1 and line == "error: unexpected TypeError: bug (run with --debug for the traceback)"


def test_config_errors_exit_2():
    from node.config import ConfigError

    line, code = explain(ConfigError("node.yaml: p2p.port: found 'abc'"), "run", None)
    assert code == 2 and line.startswith("config error: node.yaml")


def test_unknown_tool_hints():
    names = ["echo", "add", "word_count", "Greet"]
    assert unknown_tool_message("ecoh", None, names, "--node U") == "unknown tool 'ecoh'; did you mean 'echo'?"
    assert unknown_tool_message("greet", None, names, "--node U") == "unknown tool 'greet'; did you mean 'Greet'?"
    assert unknown_tool_message("word-count", None, names, "--node U") == \
        "unknown tool 'word-count'; did you mean 'word_count'?"
    assert unknown_tool_message("zzz", None, names, "--node U") == \
        "unknown tool 'zzz'; the node knows Greet, add, echo, word_count"
    many = [f"tool{i}" for i in range(20)]
    assert unknown_tool_message("zzz", None, many, "--node U") == \
        "unknown tool 'zzz'; `praxis-node tools --node U` lists the 20 tools the node knows"
    assert unknown_tool_message("zzz", None, [], "--peer P").startswith("unknown tool 'zzz': the node knows no tools")
    row = ToolRow(name="add", mesh_name="add", provider="node-b", peer_id="12D3KooW")
    assert unknown_tool_message("add", row, names, "--peer P") == (
        "tool 'add' has no provider any more: node-b served it and has left the mesh or cannot be reached; "
        "`praxis-node tools --peer P` lists what is served now")
