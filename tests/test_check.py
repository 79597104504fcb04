"""Config is checked once, at load: every problem at once, by `load_config` and `praxis-node check`,
and a config that passes `check` starts."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from node.cli.check import cmd_check
from node.config import ConfigError, McpServerEntry, load_config, parse_config
from tests.processes import ROOT

PEER = "12D3KooWGzBe4hpqQ6G6C1tVMSPcp7vGPSrHHKMbEWTTMtTr7D3H"
ECHO_TOOL = {"name": "echo", "engine": "python", "params": [{"name": "text", "type": "string", "required": True}],
             "engineSpec": {"callable": "tests.sample_tools:echo"}}
SECRETS = ["hdr-SECRET-1", "hdr-SECRET-2", "env-SECRET-3", "tok-SECRET-4", "cmd-SECRET-5"]


def write(folder: Path, data: dict[str, Any]) -> Path:
    path = folder / "node.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def broken_config(folder: Path) -> dict[str, Any]:
    """One problem of each kind the node used to find only at start (or on every call)."""
    (folder / "outside").mkdir()
    base = folder / "base"
    base.mkdir()
    return {
        "agent": {"name": "broken", "tools": [
            # process: a field of engineSpec of the wrong type; a parameter that could never be passed
            {"name": "shout", "engine": "process", "params": [{"name": "path"}],
             "engineSpec": {"command": f"curl -H 'X-Key: {SECRETS[4]}' http://127.0.0.1/",  # not a list
                            "env": {"API_KEY": SECRETS[2]}}},
            # dagger: a required field missing, a mount that does not exist, one outside the roots
            {"name": "count", "engine": "dagger",
             "engineSpec": {"command": ["true"], "mounts": {"./nowhere": "/a", "../outside": "/b"}}},
            # python: a callable that cannot be imported
            {"name": "ghost", "engine": "python", "engineSpec": {"callable": "no_such_module.deep:thing"}},
            # remote-mcp: headers on a stdio command
            {"name": "clock", "engine": "remote-mcp",
             "engineSpec": {"command": "mcp-server-time", "headers": {"Authorization": SECRETS[0]}}},
            # the same name twice
            {"name": "clock", "engine": "python", "engineSpec": {"callable": "tests.sample_tools:echo"}},
        ]},
        "p2p": {"host": "my-laptop.local", "port": "4001x",
                "bootstrap_nodes": [f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER}", "/ip4/127.0.0.1/tcp/4002"]},
        "mcp": {"host": "0.0.0.0",
                "servers": [{"name": "everything", "address": "ftp://127.0.0.1/mcp",
                             "headers": {"X-Token": SECRETS[1]}}]},
    }


EXPECTED = {  # key -> a fragment of what is said there
    "agent.tools[0].params": "parameter 'path' is reserved",
    "agent.tools[0].engineSpec.command": "must be a non-empty list of strings",
    "agent.tools[0].engine": "the process engine is disabled",
    "agent.tools[1].engineSpec.image": "missing",
    "agent.tools[1].engineSpec.mounts": "mount source './nowhere' does not exist",
    "agent.tools[2].engineSpec.callable": "cannot load 'no_such_module.deep:thing'",
    "agent.tools[3].engineSpec": "headers apply to HTTP transports only",
    "agent.tools": "the tool name(s) ['clock'] appear more than once",
    "p2p.host": "expected an IPv4 or IPv6 address",
    "p2p.port": "found '4001x'",
    "p2p.bootstrap_nodes[1]": "does not end in /p2p/<peer id>",
    "mcp.token": "mcp.host '0.0.0.0' is not a loopback address",
    "mcp.servers[0]": "address must be an http:// or https:// URL",
}


def assert_every_problem(problems: list[tuple[str, str]], text: str) -> None:
    for key, fragment in EXPECTED.items():
        assert any(where == key and fragment in what for where, what in problems), (key, fragment, text)
    outside = [what for where, what in problems if where == "agent.tools[1].engineSpec.mounts"]
    assert any("'../outside' resolves outside the allowed mount roots" in what for what in outside), text
    for secret in SECRETS:
        assert secret not in text


def test_load_config_reports_every_problem_at_once(tmp_path: Path) -> None:
    path = write(tmp_path / "base", broken_config(tmp_path))
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    problems = [(p.where, p.text) for p in err.value.problems]
    text = str(err.value)
    assert text.startswith(f"{path}: invalid configuration\n")
    assert text.count("\n") == len(problems)  # one line per problem
    assert_every_problem(problems, text)


def check_args(path: Path) -> argparse.Namespace:
    return argparse.Namespace(config=str(path))


def listed(stderr: str) -> list[tuple[str, str]]:
    """The problems `check` printed, as (key, text)."""
    out = []
    for line in stderr.splitlines()[1:]:
        where, _, what = line.strip().partition(": ")
        out.append((where, what))
    return out


async def test_check_reports_every_problem_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "base", broken_config(tmp_path))
    assert await cmd_check(check_args(path)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{path}: invalid configuration\n")
    assert_every_problem(listed(err), err)


def test_mcp_host_must_be_an_address(tmp_path: Path) -> None:
    """(Not in the broken config above: with mcp.host not an address, the token rule cannot apply.)"""
    with pytest.raises(ConfigError, match=r"mcp.host: found 'my laptop'; expected an IPv4 or IPv6 address"):
        load_config(write(tmp_path, {"mcp": {"host": "my laptop", "token": SECRETS[3]}}), env={})
    for host in ("127.0.0.1", "::1", "[::1]", "localhost"):
        assert load_config(write(tmp_path, {"mcp": {"host": host}}), env={}).mcp.host == host
    # Off loopback with a token, or with the endpoint off: nothing to refuse.
    assert load_config(write(tmp_path, {"mcp": {"host": "0.0.0.0", "token": SECRETS[3]}}), env={}).mcp.token
    assert not load_config(write(tmp_path, {"mcp": {"host": "0.0.0.0", "enabled": False}}), env={}).mcp.enabled


def good_config(folder: Path) -> Path:
    (folder / "data").mkdir(parents=True)
    (folder / "work").mkdir()
    (folder / "keys").mkdir()
    return write(folder, {
        "agent": {"name": "good", "tools": [
            {"name": "echo", "engine": "python", "params": [{"name": "text", "type": "string", "required": True}],
             "engineSpec": {"callable": "tests.sample_tools:echo"}},
            {"name": "shout", "engine": "process", "params": [{"name": "text", "type": "string"}],
             "engineSpec": {"command": ["sh", "-c", 'printf %s "$text" | tr a-z A-Z; pwd >&2'], "cwd": "work",
                            "timeout": 5, "env": {"API_KEY": SECRETS[2]}}},
            {"name": "count", "engine": "dagger", "params": [{"name": "text", "type": "string"}],
             "engineSpec": {"image": "busybox:latest", "command": ["sh", "-c", 'echo "$text" | wc -w'],
                            "mounts": {"./data": "/data"}, "go_only_field": {"ignored": True}}},
            {"name": "add", "engine": "remote-mcp",
             "engineSpec": {"address": "http://127.0.0.1:9/mcp", "tool": "get-sum",
                            "headers": {"Authorization": f"Bearer {SECRETS[0]}"}}},
        ]},
        "p2p": {"host": "127.0.0.1", "port": 0, "enable_mdns": False, "key_file": "keys/node.key",
                "bootstrap_nodes": [f"/ip4/127.0.0.1/tcp/9/p2p/{PEER}"]},
        "mcp": {"host": "127.0.0.1", "port": 0, "token": SECRETS[3],
                "servers": [{"name": "ghost", "address": "http://127.0.0.1:9/mcp",
                             "headers": {"X-Token": SECRETS[1]}}]},
        "engines": {"process": {"enabled": True}},
        "limits": {"connect_timeout_seconds": 2},
    })


async def test_a_config_that_passes_check_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from libp2p.crypto.ed25519 import create_new_key_pair

    from node.app import Node

    path = good_config(tmp_path)
    assert await cmd_check(check_args(path)) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: ok (4 tools: echo, shout, count, add)\n" and err == ""
    assert not (tmp_path / "keys" / "node.key").exists()  # check creates nothing

    config = load_config(path, env={})
    node = Node(config, key_pair=create_new_key_pair())
    async with node.running():
        assert node.mcp_url.startswith("http://127.0.0.1:")
        assert (await node.call("echo", {"text": "hi"}, timeout=10)).result.text_output() == "hi"
        assert (await node.call("shout", {"text": "hi"}, timeout=10)).result.text_output() == "HI"
    for secret in SECRETS:
        assert secret not in out + err


async def test_check_reads_the_key_file_and_never_creates_it(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, {"p2p": {"key_file": "no/such/folder/node.key"}})
    assert await cmd_check(check_args(path)) == 2
    assert "p2p.key_file: " in capsys.readouterr().err and not (tmp_path / "no").exists()

    (tmp_path / "bad.key").write_bytes(b"not a key")
    path = write(tmp_path, {"p2p": {"key_file": "bad.key"}})
    assert await cmd_check(check_args(path)) == 2
    err = capsys.readouterr().err
    assert "p2p.key_file: " in err and "the node key cannot be read" in err

    path = write(tmp_path, {"p2p": {"key_file": "/dev/zero"}})
    assert await cmd_check(check_args(path)) == 2
    assert "is not a regular file (it is a character device)" in capsys.readouterr().err

    path = write(tmp_path, {"p2p": {"key_file": "fresh.key"}})
    assert await cmd_check(check_args(path)) == 0
    assert capsys.readouterr().out == f"{path}: ok (0 tools)\n" and not (tmp_path / "fresh.key").exists()


def _check_is_registered() -> bool:
    from node.cli.main import build_parser

    commands = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return any("check" in a.choices for a in commands)


@pytest.mark.skipif(not _check_is_registered(),
                    reason="`check` is not registered in node/cli/main.py yet (node.cli.check.add_parser)")
def test_praxis_node_check_as_a_process(tmp_path: Path) -> None:
    broken = write(tmp_path / "base", broken_config(tmp_path))
    done = subprocess.run([sys.executable, "-m", "node.cli.main", "check", "-c", str(broken)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert_every_problem(listed(done.stderr), done.stdout + done.stderr)

    good = good_config(tmp_path / "good")
    done = subprocess.run([sys.executable, "-m", "node.cli.main", "check", "-c", str(good)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{good}: ok (4 tools: echo, shout, count, add)\n"
    assert not any(secret in done.stdout + done.stderr for secret in SECRETS)


# -- what `check` accepts, the code that runs at start accepts -------------------------------------

ADDRESSES = [
    f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER}",
    "/ip6/::1/tcp/4001/p2p/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",
    f"/dns4/node.example/tcp/4001/p2p/{PEER}",
    "/ip4/127.0.0.1/tcp/4001/p2p/bafzaajaiaejcakgcmrapzz7kxb6u42gavp3ysuaa3qyygilqq3ejhzbk7hw7w6ye",
    f"ip4/127.0.0.1/tcp/4001/p2p/{PEER}",
    f"/p2p/{PEER}",  # refused: no address to dial
    "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW",
    "/ip4/127.0.0.1/tcp/4001/p2p/a",
    f"/ip4/127.0.0.1/p2p/{PEER}/tcp/4001",
    "/ip4/127.0.0.1/tcp/4001",
    "", "/", "12D3KooW", "/ip4/999.0.0.1/tcp/1/p2p/" + PEER,
]


@pytest.mark.parametrize("address", ADDRESSES)
def test_bootstrap_addresses_that_load_are_dialable(address: str) -> None:
    from node.mesh.host import parse_peer_addr

    try:
        parse_config({"p2p": {"bootstrap_nodes": [address]}}, env={})
    except ConfigError as exc:
        assert "p2p.bootstrap_nodes[0]: " in str(exc)
        return
    info = parse_peer_addr(address)  # what the node does with it at start
    assert info.addrs and str(info.addrs[0]) and info.peer_id.to_string()


SERVERS: list[dict[str, Any]] = [
    {"address": "http://127.0.0.1:1/mcp"}, {"address": "https://h/mcp", "transport": "sse"},
    {"command": "srv", "args": ["-v"], "env": {"A": "b"}}, {"command": "srv", "transport": "stdio"},
    {}, {"transport": "stdio"}, {"address": "ftp://h/x"}, {"address": "http:///x"}, {"address": "http://h:99999/"},
    {"address": "http://[::1/"}, {"address": "http://h/", "command": "srv"}, {"command": "srv", "transport": "sse"},
    {"command": "srv", "headers": {"A": "b"}}, {"address": "http://h/", "env": {"A": "b"}},
]


@pytest.mark.parametrize("server", SERVERS)
def test_mcp_servers_that_load_build_and_describe(server: dict[str, Any]) -> None:
    """The entry's rule at load and `McpServerParams.build` at start are one rule."""
    from pydantic import ValidationError

    from node.mcp.clients import McpServerParams

    try:
        entry = McpServerEntry.model_validate({"name": "s", **server})
    except ValidationError:
        with pytest.raises(ValueError):
            McpServerParams.build("s", **server)
        return
    params = McpServerParams.build("s", address=entry.address, transport=entry.transport, command=entry.command,
                                   args=entry.args, env=entry.env, headers=entry.headers)
    assert params.describe().startswith("MCP server 's'")


def test_a_dagger_spec_that_loads_passes_the_engine(tmp_path: Path) -> None:
    from node.tools.engines.dagger import DaggerEngine

    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    path = write(tmp_path, {"agent": {"tools": [
        {"name": "d", "engine": "dagger", "engineSpec": {"image": "busybox", "command": ["true"],
                                                          "mounts": {"data": "/a", "./link/": "/b"}}}]}})
    config = load_config(path, env={})
    engine = DaggerEngine(config.engines.dagger, config.base_dir, environ={})
    engine.check_contract(config.agent.tools[0])


def test_folders_a_tool_runs_in_must_exist(tmp_path: Path) -> None:
    """A missing cwd used to fail every call (process) or every connection (stdio MCP server)."""
    (tmp_path / "here").mkdir()
    path = write(tmp_path, {
        "agent": {"tools": [
            {"name": "p", "engine": "process", "engineSpec": {"command": ["true"], "cwd": "gone"}},
            {"name": "q", "engine": "process", "engineSpec": {"command": ["true"], "cwd": "here"}},
            {"name": "r", "engine": "remote-mcp", "engineSpec": {"command": "srv", "cwd": "gone"}},
        ]},
        "mcp": {"servers": [{"name": "s", "command": "srv", "cwd": "gone"},
                            {"name": "h", "address": "http://127.0.0.1:1/mcp", "cwd": "gone"}]},  # cwd unused
        "engines": {"process": {"enabled": True}},
    })
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert [(p.where, p.text) for p in err.value.problems] == [
        ("agent.tools[0].engineSpec.cwd", "folder 'gone' does not exist"),
        ("agent.tools[2].engineSpec.cwd", "folder 'gone' does not exist"),
        ("mcp.servers[0].cwd", "folder 'gone' does not exist"),
    ]


def test_mounts_are_checked_against_the_configured_roots(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "in").mkdir(parents=True)
    base = tmp_path / "base"
    base.mkdir()
    tool = {"name": "d", "engine": "dagger",
            "engineSpec": {"image": "busybox", "command": ["true"], "mounts": {str(shared / "in"): "/in"}}}
    with pytest.raises(ConfigError, match=r"resolves outside the allowed mount roots"):
        load_config(write(base, {"agent": {"tools": [tool]}}), env={})
    roots = {"dagger": {"mount_roots": [str(shared)]}}
    config = load_config(write(base, {"agent": {"tools": [tool]}, "engines": roots}), env={})
    assert config.engines.dagger.mount_roots == [str(shared)]
    # With mount_roots itself invalid, that is reported, and the mounts are still checked for existence.
    tool["engineSpec"]["mounts"] = {"./nowhere": "/in"}
    with pytest.raises(ConfigError) as err:
        load_config(write(base, {"agent": {"tools": [tool]}, "engines": {"dagger": {"mount_roots": "shared"}}}),
                    env={})
    assert {p.where for p in err.value.problems} == {"agent.tools[0].engineSpec.mounts", "engines.dagger.mount_roots"}


# -- a process tool needs the process engine (issue 12): refused at load, not on every call -------

PROCESS_TOOL = {"name": "shout", "engine": "process", "params": [{"name": "text", "type": "string"}],
                "engineSpec": {"command": ["sh", "-c", 'printf %s "$text" | tr a-z A-Z']}}


def test_a_process_tool_while_the_process_engine_is_off_is_refused_at_load(tmp_path: Path) -> None:
    """Before, the tool loaded, was advertised to every peer, and each call failed."""
    path = write(tmp_path, {"agent": {"tools": [ECHO_TOOL, PROCESS_TOOL]}, "p2p": {"port": "x"}})
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert [(p.where, p.text) for p in err.value.problems] == [
        ("p2p.port", "found 'x'; expected an integer"),
        ("agent.tools[1].engine", "tool 'shout' is a process tool, but the process engine is disabled, so every "
                                  "call would be refused: set engines.process.enabled: true (the process runs on "
                                  "this host without isolation), or remove the tool"),
    ]
    on = {"agent": {"tools": [ECHO_TOOL, PROCESS_TOOL]}, "engines": {"process": {"enabled": True}}}
    assert load_config(write(tmp_path, on), env={}).engines.process.enabled
    off = {"agent": {"tools": [ECHO_TOOL, PROCESS_TOOL]}}
    assert load_config(write(tmp_path, off), env={"PRAXIS_ENGINES_PROCESS_ENABLED": "true"}).engines.process.enabled
    assert load_config(write(tmp_path, {"agent": {"tools": [ECHO_TOOL]}}), env={})  # no process tool: nothing to say


async def test_the_engine_still_refuses_a_call_when_the_setting_changed_after_load(tmp_path: Path) -> None:
    """Defence in depth: the engine's own refusal stays, for a config changed (or built) in code."""
    from libp2p.crypto.ed25519 import create_new_key_pair

    from node.app import Node
    from protocols.errors import EngineUnavailable

    config = load_config(write(tmp_path, {"agent": {"tools": [PROCESS_TOOL]}, "p2p": {"port": 0, "enable_mdns": False},
                                          "mcp": {"enabled": False}, "engines": {"process": {"enabled": True}}}),
                         env={})
    config.engines.process.enabled = False
    node = Node(config, key_pair=create_new_key_pair())
    async with node.running():
        with pytest.raises(EngineUnavailable, match="engines.process.enabled"):
            await node.call("shout", {"text": "hi"}, timeout=10)


def test_praxis_node_check_and_run_refuse_a_process_tool_without_the_engine(tmp_path: Path) -> None:
    path = write(tmp_path, {"agent": {"tools": [PROCESS_TOOL]}, "p2p": {"port": 0, "enable_mdns": False},
                            "mcp": {"enabled": False}})
    for command in ("check", "run"):
        done = subprocess.run([sys.executable, "-m", "node.cli.main", command, "-c", str(path)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert "agent.tools[0].engine: tool 'shout' is a process tool, but the process engine is disabled" \
            in done.stderr, done.stderr
