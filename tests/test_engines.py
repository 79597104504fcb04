"""The python and process engines, and argument checking, on real callables and processes."""

from __future__ import annotations

import re
import sys

import pytest
import trio

from node.config import ProcessEngineSettings, ToolContract
from node.tools.arguments import check_arguments
from node.tools.engines.env import arguments_as_env
from node.tools.engines.process import ProcessEngine
from node.tools.engines.python import PythonEngine
from protocols.errors import (
    ContractError,
    EngineUnavailable,
    InvalidArguments,
    TooLarge,
    ToolExecutionError,
    ToolTimeout,
)
from protocols.messages import ToolParameter


def soon(seconds: float = 5) -> float:
    return trio.current_time() + seconds


def py(func: str, params: list[ToolParameter] | None = None) -> ToolContract:
    return ToolContract(name=func, engine="python", engine_spec={"callable": f"tests.sample_tools:{func}"},
                        params=params or [])


def proc(command: list[str], params: list[dict] | None = None, **spec) -> ToolContract:
    return ToolContract.model_validate(
        {"name": "p", "engine": "process", "params": params or [], "engineSpec": {"command": command, **spec}})


async def test_python_engine_sync_async_and_structured():
    engine = PythonEngine()
    assert (await engine.execute(py("echo"), {"text": "hi"}, soon())).text_output() == "hi"
    result = await engine.execute(py("add"), {"a": 1, "b": 2.5}, soon())
    assert result.structured_content == {"sum": 3.5}
    assert (await engine.execute(py("slow"), {"seconds": 0}, soon())).text_output() == "slept 0s"


async def test_python_engine_errors():
    engine = PythonEngine()
    with pytest.raises(ToolTimeout):
        await engine.execute(py("slow"), {"seconds": 10}, soon(0.2))
    with pytest.raises(ToolExecutionError, match="RuntimeError: bad"):
        await engine.execute(py("fail"), {"message": "bad"}, soon())
    with pytest.raises(ContractError, match="cannot load"):
        engine.check_contract(ToolContract(name="x", engine="python", engine_spec={"callable": "no.such:thing"}))
    with pytest.raises(ContractError, match="package.module:function"):
        engine.check_contract(ToolContract(name="x", engine="python", engine_spec={"callable": 5}))


def enabled() -> ProcessEngine:
    from pathlib import Path

    return ProcessEngine(ProcessEngineSettings(enabled=True, max_output_bytes=1000), Path("/"))


async def test_process_engine_arguments_as_env_and_json_stdout():
    result = await enabled().execute(
        proc(["sh", "-c", 'printf \'{"got": "%s", "n": %s}\' "$word" "$n"'], env={"FIXED": "1"},
             params=[{"name": "word"}, {"name": "n", "type": "number"}]),
        {"word": "hello", "n": 3}, soon())
    assert result.structured_content == {"got": "hello", "n": 3}


async def test_process_engine_failures():
    engine = enabled()
    with pytest.raises(ToolExecutionError, match="exited with code 3: oops") as err:
        await engine.execute(proc(["sh", "-c", "echo oops >&2; exit 3"]), {}, soon())
    assert err.value.exit_code == 3
    with pytest.raises(ToolExecutionError, match="exited with code 4: no error output"):
        await engine.execute(proc(["sh", "-c", "exit 4"]), {}, soon())
    with pytest.raises(ToolTimeout):
        await engine.execute(proc(["sleep", "10"], timeout=0.3), {}, soon())
    with pytest.raises(TooLarge, match="stdout exceeded 1000 bytes"):
        await engine.execute(proc([sys.executable, "-c", "print('x' * 5000)"]), {}, soon())
    with pytest.raises(ToolExecutionError, match="cannot start"):
        await engine.execute(proc(["/no/such/binary"]), {}, soon())
    with pytest.raises(ContractError, match="non-empty list of strings"):
        engine.check_contract(proc("echo hi"))  # type: ignore[arg-type]


async def test_process_engine_is_off_unless_enabled():
    from pathlib import Path

    engine = ProcessEngine(ProcessEngineSettings(), Path("/"))
    with pytest.raises(EngineUnavailable, match="engines.process.enabled"):
        await engine.execute(proc(["true"]), {}, soon())


HOSTILE_NAMES = ["SHELLOPTS", "PS4", "BASHOPTS", "PROMPT_COMMAND", "PAGER", "GIT_SSH_COMMAND", "GIT_CONFIG_COUNT",
                 "_JAVA_OPTIONS", "GCONV_PATH", "http_proxy", "PATH", "LD_PRELOAD", "PYTHONPATH", "HOME", "path",
                 "1abc", "a-b", "CACHE_BUST"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_only_declared_parameters_become_env(name):
    with pytest.raises(InvalidArguments, match=f"undeclared argument.*{re.escape(repr(name))}"):
        arguments_as_env(proc(["true"]), {name: "v"})
    with pytest.raises(InvalidArguments, match="undeclared"):
        arguments_as_env(proc(["true"], params=[{"name": "text"}]), {"text": "ok", name: "v"})


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_env_name_rule_holds_even_for_a_contract_that_skipped_validation(name):
    """Defence in depth: a contract built without validation still cannot set such a variable."""
    unchecked = ToolContract.model_construct(name="p", engine="process", engine_spec={"command": ["true"]},
                                             params=[ToolParameter(name=name)], accept_undeclared_arguments=False)
    with pytest.raises(InvalidArguments, match=re.escape(repr(name))):
        arguments_as_env(unchecked, {name: "v"})


def test_argument_may_not_override_contract_env():
    contract = proc(["true"], params=[{"name": "a", "type": "array"}, {"name": "b", "type": "boolean"},
                                      {"name": "c"}])
    with pytest.raises(InvalidArguments, match="override a variable"):
        arguments_as_env(contract, {"c": "x"}, reserved={"c"})
    assert arguments_as_env(contract, {"a": [1, 2], "b": True, "c": "s"}) == {"a": "[1,2]", "b": "true", "c": "s"}


async def test_process_engine_refuses_undeclared_arguments_before_running(tmp_path):
    """Called directly (not through LocalTools), the engine still sets only declared parameters."""
    marker = tmp_path / "ran"
    engine = enabled()
    hello = proc(["sh", "-c", f"touch {marker}; echo hello"])
    for arguments in [{"SHELLOPTS": "xtrace", "PS4": "$(id)"}, {"http_proxy": "http://127.0.0.1:9"}, {"x": "1"}]:
        with pytest.raises(InvalidArguments, match=re.escape(repr(next(iter(arguments))))):
            await engine.execute(hello, arguments, soon())
    assert not marker.exists()
    assert (await engine.execute(hello, {}, soon())).text_output() == "hello\n"


def test_argument_types_are_checked_and_values_never_echoed():
    params = [ToolParameter(name="n", type="number", required=True),
              ToolParameter(name="flag", type="boolean")]
    check_arguments("t", params, {"n": 1.5, "flag": False})
    with pytest.raises(InvalidArguments) as err:
        check_arguments("t", params, {"n": True, "flag": "SECRET-VALUE"})
    assert "argument 'n' must be number, got boolean" in err.value.message
    assert "SECRET-VALUE" not in err.value.message


def test_undeclared_arguments_are_refused_even_without_params():
    with pytest.raises(InvalidArguments) as err:
        check_arguments("t", [], {"SHELLOPTS": "xtrace", "PS4": "SECRET-VALUE"})
    assert "unknown argument 'SHELLOPTS'" in err.value.message and "unknown argument 'PS4'" in err.value.message
    assert "takes no arguments" in err.value.message and "SECRET-VALUE" not in err.value.message
    check_arguments("t", [], {})
    params = [ToolParameter(name="n", type="number", required=True)]
    with pytest.raises(InvalidArguments, match="unknown argument 'extra'"):
        check_arguments("t", params, {"n": 1, "extra": "x"})


def test_accept_undeclared_arguments_keeps_declared_ones_checked():
    params = [ToolParameter(name="n", type="number", required=True)]
    check_arguments("t", [], {"anything": 1}, accept_undeclared=True)
    check_arguments("t", params, {"n": 1, "extra": "x"}, accept_undeclared=True)
    with pytest.raises(InvalidArguments, match="argument 'n' must be number"):
        check_arguments("t", params, {"n": "one", "extra": "x"}, accept_undeclared=True)
    with pytest.raises(InvalidArguments, match="missing required argument 'n'"):
        check_arguments("t", params, {"extra": "x"}, accept_undeclared=True)


def test_argument_errors_are_bounded():
    with pytest.raises(InvalidArguments) as err:
        check_arguments("t", [], {f"name{i}": i for i in range(5000)})
    assert len(err.value.message) < 1000 and "and 4990 more" in err.value.message


async def test_local_tools_honour_the_contract_flag():
    from node.tools.local import LocalTools

    strict = ToolContract(name="strict", engine="python", engine_spec={"callable": "tests.sample_tools:names"})
    open_ = ToolContract(name="open", engine="python", engine_spec={"callable": "tests.sample_tools:names"},
                         accept_undeclared_arguments=True)
    local = LocalTools([strict, open_], {"python": PythonEngine()})
    with pytest.raises(InvalidArguments, match="unknown argument 'x'"):
        await local.run("strict", {"x": 1}, soon())
    assert (await local.run("open", {"x": 1, "y": 2}, soon())).structured_content == {"result": ["x", "y"]}
    assert strict.input_schema()["additionalProperties"] is False
    assert open_.input_schema()["additionalProperties"] is True


async def test_argument_and_result_size_limits():
    from node.tools.local import LocalTools

    echo = py("echo", [ToolParameter(name="text", required=True)])
    local = LocalTools([echo], {"python": PythonEngine()}, max_argument_bytes=100, max_result_bytes=200)
    with pytest.raises(TooLarge, match="arguments are .* over the limit of 100"):
        await local.run("echo", {"text": "x" * 200}, soon())
    assert (await local.run("echo", {"text": "x" * 50}, soon())).text_output() == "x" * 50
    local.max_argument_bytes = 10_000
    with pytest.raises(TooLarge, match="result is .* over the limit of 200"):
        await local.run("echo", {"text": "y" * 500}, soon())


# -- engines check contracts built in code with the config's models -----------------------------------

def test_process_engine_checks_a_contract_with_the_config_model():
    """Every problem of the engineSpec at once, each naming its field; never a value."""
    contract = proc(["true"], timeout="5", env={"TOKEN": ["SECRET-VALUE"]}, cwd=7)
    contract.engine_spec["command"] = "echo hi"
    with pytest.raises(ContractError) as err:
        enabled().check_contract(contract)
    message = err.value.message
    assert message.startswith("tool 'p': ")
    for field in ("engineSpec.command", "engineSpec.env", "engineSpec.timeout", "engineSpec.cwd"):
        assert field in message, message
    assert "SECRET-VALUE" not in message


async def test_engines_run_the_typed_spec(tmp_path):
    """A contract from a loaded config carries its parsed spec; the engine runs that."""
    from node.config import ProcessSpec, parse_config

    (tmp_path / "work").mkdir()
    config = parse_config({"agent": {"tools": [
        {"name": "where", "engine": "process",
         "engineSpec": {"command": ["sh", "-c", 'pwd; printf %s "$FIXED"'], "cwd": "work", "env": {"FIXED": "x"},
                        "timeout": 5, "go_only": True}}]}, "engines": {"process": {"enabled": True}}},
        env={}, base_dir=tmp_path)
    contract = config.agent.tools[0]
    spec = contract.typed_spec(ProcessSpec)
    assert spec.cwd == "work" and spec.timeout == 5.0 and contract.typed_spec(ProcessSpec) is spec
    engine = ProcessEngine(ProcessEngineSettings(enabled=True), config.base_dir)
    engine.check_contract(contract)
    result = await engine.execute(contract, {}, soon())
    assert result.text_output() == f"{(tmp_path / 'work').resolve()}\nx"


def test_python_engine_reports_a_module_that_fails_to_import(tmp_path, monkeypatch):
    (tmp_path / "broken_tool_module.py").write_text("raise RuntimeError('broken at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    contract = ToolContract(name="x", engine="python", engine_spec={"callable": "broken_tool_module:f"})
    with pytest.raises(ContractError, match=r"cannot load 'broken_tool_module:f': RuntimeError: broken at import"):
        PythonEngine().check_contract(contract)


async def test_local_tools_name_every_contract_they_cannot_run():
    from node.tools.local import LocalTools

    bad = [ToolContract(name="a", engine="python", engine_spec={"callable": "no.such:thing"}),
           ToolContract(name="b", engine="python", engine_spec={}),
           py("echo")]
    with pytest.raises(ContractError) as err:
        LocalTools(bad, {"python": PythonEngine()}).check_contracts()
    assert "tool 'a': cannot load 'no.such:thing'" in err.value.message
    assert "tool 'b': engineSpec.callable is missing" in err.value.message
