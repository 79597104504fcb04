"""Python tools beside the config (issue 12): `callable: mytools:greet` with `mytools.py` next to
`node.yaml` loads without PYTHONPATH, from that folder first, without changing `sys.path`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import yaml

from node.config import ConfigError, load_config
from node.tools.engines.python import PythonEngine
from tests.processes import CLI, ROOT, node_process

GREET_PARAMS = [{"name": "name", "type": "string", "required": True}]


def tool_folder(folder: Path, files: dict[str, str], callables: dict[str, str], **sections: object) -> Path:
    """A config folder: the given files, and node.yaml with one python tool per callable."""
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    tools = [{"name": name, "engine": "python", "params": GREET_PARAMS, "engineSpec": {"callable": target}}
             for name, target in callables.items()]
    config = folder / "node.yaml"
    config.write_text(yaml.safe_dump({"agent": {"name": folder.name, "tools": tools},
                                      "p2p": {"port": 0, "enable_mdns": False}, "mcp": {"enabled": False},
                                      **sections}))
    return config


async def run_tool(config_path: Path, tool: str, **arguments: object) -> str:
    config = load_config(config_path, env={})
    contract = config.tool(tool)
    assert contract is not None
    result = await PythonEngine().execute(contract, dict(arguments), trio.current_time() + 5)
    return result.text_output()


def greet(word: str) -> str:
    return f"def greet(name):\n    return {word!r} + ', ' + name\n"


async def test_a_module_beside_the_config_loads_without_pythonpath(tmp_path: Path) -> None:
    """Before: "No module named 'mytools'" unless PYTHONPATH named the folder."""
    path_before = list(sys.path)
    config = tool_folder(tmp_path, {"mytools.py": greet("Hello")}, {"greet": "mytools:greet"})
    assert await run_tool(config, "greet", name="World") == "Hello, World"
    assert sys.path == path_before and "mytools" not in sys.modules


async def test_two_configs_each_get_their_own_module_of_one_name(tmp_path: Path) -> None:
    """Two nodes in one process, each with its own mytools.py: no clash, no shared state."""
    first = tool_folder(tmp_path / "a", {"mytools.py": greet("Hello")}, {"greet": "mytools:greet"})
    second = tool_folder(tmp_path / "b", {"mytools.py": greet("Bonjour")}, {"greet": "mytools:greet"})
    assert await run_tool(first, "greet", name="A") == "Hello, A"
    assert await run_tool(second, "greet", name="B") == "Bonjour, B"
    engine = PythonEngine()  # one engine serving both contracts keeps them apart too
    a, b = load_config(first, env={}).tool("greet"), load_config(second, env={}).tool("greet")
    assert a is not None and b is not None
    deadline = trio.current_time() + 5
    assert [(await engine.execute(c, {"name": "x"}, deadline)).text_output() for c in (a, b, a)] == \
        ["Hello, x", "Bonjour, x", "Hello, x"]


async def test_packages_in_the_config_folder_and_relative_imports(tmp_path: Path) -> None:
    files = {"pkg/__init__.py": "", "pkg/tools.py": "from . import words\n\ndef greet(name):\n"
                                                    "    return words.HELLO + ', ' + name\n",
             "pkg/words.py": "HELLO = 'Hi'\n",
             "mytools.py": "from . import helpers\n\ndef greet(name):\n    return helpers.HELLO + ' ' + name\n",
             "helpers.py": "HELLO = 'Hey'\n"}
    config = tool_folder(tmp_path, files, {"pkg_greet": "pkg.tools:greet", "greet": "mytools:greet"})
    assert await run_tool(config, "pkg_greet", name="P") == "Hi, P"
    assert await run_tool(config, "greet", name="M") == "Hey M"


async def test_the_config_folder_wins_over_an_installed_module_without_replacing_it(tmp_path: Path) -> None:
    """A yaml.py beside the config is the config's: the tool gets it, the rest of the process keeps PyYAML."""
    config = tool_folder(tmp_path, {"yaml.py": greet("Local")}, {"greet": "yaml:greet"})
    assert await run_tool(config, "greet", name="Y") == "Local, Y"
    assert sys.modules["yaml"] is yaml and yaml.safe_load("a: 1") == {"a": 1}


def test_modules_not_in_the_folder_come_from_the_import_path(tmp_path: Path) -> None:
    """A folder without __init__.py (here a data folder called `tests`) is not a module of the config."""
    config = tool_folder(tmp_path, {"tests/readme.txt": "data, not a package"},
                         {"echo": "tests.sample_tools:echo", "dumps": "json:dumps"})
    engine = PythonEngine()
    echo, dumps = load_config(config, env={}).agent.tools
    assert engine._callable(dumps)[0] is json.dumps
    assert engine._callable(echo)[0] is sys.modules["tests.sample_tools"].echo


def test_a_folder_already_on_the_import_path_is_imported_once(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With the folder on PYTHONPATH (the old workaround), the module keeps its own name: one copy."""
    config = tool_folder(tmp_path, {"onpath_tools.py": greet("Once")}, {"greet": "onpath_tools:greet"})
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        [contract] = load_config(config, env={}).agent.tools
        assert PythonEngine()._callable(contract)[0] is sys.modules["onpath_tools"].greet
    finally:
        sys.modules.pop("onpath_tools", None)


def test_a_module_that_imports_its_neighbour_absolutely_says_how_to_fix_it(tmp_path: Path) -> None:
    config = tool_folder(tmp_path, {"mytools.py": "import helpers\n\ndef greet(name):\n    return name\n",
                                    "helpers.py": ""}, {"greet": "mytools:greet"})
    with pytest.raises(ConfigError) as err:
        load_config(config, env={})
    [problem] = err.value.problems
    assert problem.where == "agent.tools[0].engineSpec.callable"
    assert problem.text == ("cannot load 'mytools:greet': ModuleNotFoundError: No module named 'helpers' (the config "
                            "folder's modules are not on the import path: import 'helpers' relatively, "
                            "`from . import helpers`, or set PYTHONPATH)")


async def test_check_run_and_call_a_tool_beside_the_config(tmp_path: Path) -> None:
    """Through the real CLI, as a new user would: check passes, run serves it, call --peer calls it."""
    folder = tmp_path / "my node"
    folder.mkdir()
    config = tool_folder(folder, {"mytools.py": greet("Hello")}, {"greet": "mytools:greet"})
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with trio.fail_after(60):
        done = await trio.run_process([*CLI, "check", "-c", str(config)], cwd=ROOT, env=env, capture_stdout=True,
                                      capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode() == f"{config}: ok (1 tool: greet)\n"
    async with node_process(config) as (_, ready):
        with trio.fail_after(60):
            done = await trio.run_process([*CLI, "call", "--peer", ready["addrs"][0], "greet", "name=World"],
                                          cwd=ROOT, env=env, capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "Hello, World"
    assert not (ROOT / "mytools.py").exists()  # found beside the config, not in the folder the CLI ran in


def test_praxis_node_check_without_the_module_names_the_callable(tmp_path: Path) -> None:
    config = tool_folder(tmp_path, {}, {"greet": "mytools_missing:greet"})
    done = subprocess.run([*CLI, "check", "-c", str(config)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "agent.tools[0].engineSpec.callable: cannot load 'mytools_missing:greet': ModuleNotFoundError" \
        in done.stderr
