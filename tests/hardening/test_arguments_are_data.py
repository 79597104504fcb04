"""Finding 4 of issue 8: arguments are data, never code.

A hostile peer (a raw libp2p host writing frames by hand) calls process and dagger tools with
environment names that make programs run code or change what they do (SHELLOPTS + PS4,
GIT_CONFIG_*, GIT_SSH_COMMAND, _JAVA_OPTIONS, GCONV_PATH, http_proxy, BASHOPTS, PROMPT_COMMAND,
PAGER...). Every such call is refused with InvalidArguments naming the argument, nothing runs,
and the file the payloads would create never appears; declared parameters still work.

The process tools run in a real `praxis-node run` process. As root, bash ignores PS4 from the
environment, so there the tool drops to `nobody` first (setpriv): the victim the finding was
reproduced on. On the code before this fix the payloads create FILE.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair

from node.app import Node
from node.tools.engines.dagger import DaggerEngine
from tests.dagger_fixtures import IMAGE, DaggerBackend
from tests.helpers import node_config
from tests.processes import node_process, write_config
from tests.raw_peer import frame, open_stream, raw_host, read_json

INVALID_ARGUMENTS = -32602


def as_victim(argv: list[str]) -> list[str]:
    """The command as a non-root user when the tests run as root (bash imports PS4 only then)."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot run the tool as an ordinary user")
    return [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]


def hostile_payloads(file: Path) -> list[dict[str, Any]]:
    """Argument sets that run `id > FILE` (or change what a program does) if they become env."""
    run = f"id > {file}"
    return [
        {"SHELLOPTS": "xtrace", "PS4": f"$({run})"},
        {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.fsmonitor", "GIT_CONFIG_VALUE_0": f"{run}; :"},
        {"GIT_CONFIG_PARAMETERS": f"'core.fsmonitor'='{run}; :'"},
        {"GIT_SSH_COMMAND": run},
        {"_JAVA_OPTIONS": "-javaagent:/tmp/evil.jar"},
        {"GCONV_PATH": "/tmp/evil"},
        {"http_proxy": "http://127.0.0.1:9"},
        {"https_proxy": "http://127.0.0.1:9"},
        {"BASHOPTS": "extdebug"},
        {"PROMPT_COMMAND": run},
        {"PAGER": run},
        {"BASH_ENV": str(file)},
        {"LD_PRELOAD": "/tmp/evil.so"},
    ]


@pytest.fixture
def victim_dir() -> Iterator[Path]:
    """A folder the tool (possibly `nobody`) could write FILE into, if a payload ever ran,
    with a git repository `repo` in it for the git tool."""
    folder = Path(tempfile.mkdtemp(prefix="praxis-args-"))
    folder.chmod(0o777)
    subprocess.run(["git", "init", "-q", str(folder / "repo")], check=True)
    subprocess.run(["chmod", "-R", "a+rwX", str(folder / "repo")], check=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


async def call_raw(peer: IHost, addr: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    stream = await open_stream(peer, addr, "/praxis/tool/1.0.0")
    try:
        await stream.write(frame({"id": "x", "name": tool, "timestamp": 1, "arguments": arguments}))
        response: dict[str, Any] = await read_json(stream, timeout=30)
        return response
    finally:
        await stream.close()


def assert_refused(response: dict[str, Any], names: list[str]) -> None:
    error = response.get("error")
    assert error is not None, f"the call was served: {response['result']}"
    assert error["code"] == INVALID_ARGUMENTS, error
    assert any(name in error["message"] for name in names), error["message"]


async def test_hostile_env_names_never_reach_a_process_tool(tmp_path: Path, victim_dir: Path) -> None:
    file = victim_dir / "FILE"
    repo = victim_dir / "repo"
    everyone = {"allow_peers": ["*"]}
    tools = [
        {"name": "hello", "engine": "process", **everyone,
         "engineSpec": {"command": as_victim(["bash", "-c", "echo hello"])}},
        {"name": "greet", "engine": "process", **everyone,
         "params": [{"name": "who", "type": "string", "required": True}],
         "engineSpec": {"command": as_victim(["bash", "-c", 'echo "hello $who"'])}},
        {"name": "status", "engine": "process", **everyone,  # git reads GIT_CONFIG_* and runs fsmonitor
         "engineSpec": {"command": as_victim(["git", "-c", f"safe.directory={repo}", "-C", str(repo),
                                              "status", "--short"])}},
    ]
    config = write_config(tmp_path / "victim", "victim", tools, [], engines={"process": {"enabled": True}})
    async with node_process(config) as (_proc, ready), raw_host() as attacker:
        addr = ready["addrs"][0]
        # The tools work, with the arguments they declare.
        assert (await call_raw(attacker, addr, "hello", {}))["result"]["content"][0]["text"] == "hello\n"
        greeting = await call_raw(attacker, addr, "greet", {"who": "$(id)"})
        assert greeting["result"]["content"][0]["text"] == "hello $(id)\n"  # a value stays data
        for payload in hostile_payloads(file):
            names = list(payload)
            for tool, arguments in [
                ("hello", payload),
                ("status", payload),
                ("greet", {"who": "world", **payload}),  # declared params plus undeclared names
                # The Go node's wrapped shape is unwrapped first: no way around the check.
                ("hello", {"args": {}, "params": {}, "secrets": payload}),
                ("greet", {"args": {"who": "world"}, "params": payload, "secrets": {}}),
            ]:
                assert_refused(await call_raw(attacker, addr, tool, arguments), names)
        assert not file.exists(), f"a payload ran: {file.read_text()!r}"
    log = (config.parent / "node.log").read_text()
    assert "id >" not in log  # argument values are never logged


DAGGER_TOOLS = [
    {"name": "box_hello", "engine": "dagger", "allow_peers": ["*"],
     "engineSpec": {"image": IMAGE, "command": ["sh", "-c", "echo hello"]}},
    {"name": "box_greet", "engine": "dagger", "allow_peers": ["*"],
     "params": [{"name": "who", "type": "string", "required": True}],
     "engineSpec": {"image": IMAGE, "command": ["sh", "-c", 'echo "hello $who"; env | sort']}},
]


def started(backend: DaggerBackend) -> int | None:
    """Containers the stand-in has started so far (None against a real Dagger engine)."""
    stats = backend.stats()
    return None if stats is None else int(stats["started"])


async def test_hostile_env_names_never_reach_a_container(dagger_backend: DaggerBackend, tmp_path: Path) -> None:
    """The same for dagger tools: refused before any container starts; declared params only."""
    config = node_config("provider", DAGGER_TOOLS).with_base_dir(tmp_path)
    engine = DaggerEngine(config.engines.dagger, tmp_path, environ=dagger_backend.env)
    provider = Node(config, key_pair=create_new_key_pair(), engines={"dagger": engine})
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(provider.running())
        attacker = await stack.enter_async_context(raw_host())
        addr = provider.addrs[0]
        assert (await call_raw(attacker, addr, "box_hello", {}))["result"]["content"][0]["text"] == "hello\n"
        before = started(dagger_backend)
        for payload in hostile_payloads(tmp_path / "FILE"):
            for tool, arguments in [
                ("box_hello", payload),
                ("box_greet", {"who": "world", **payload}),
                ("box_hello", {"args": {}, "params": {}, "secrets": payload}),
            ]:
                assert_refused(await call_raw(attacker, addr, tool, arguments), list(payload))
        assert started(dagger_backend) == before  # not one container was started for them
        greeted = await call_raw(attacker, addr, "box_greet", {"who": "world"})
        out = greeted["result"]["content"][0]["text"]
        assert out.startswith("hello world\n")
        assert "who=world" in out and "SHELLOPTS" not in out
