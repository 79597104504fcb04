"""The python and process engines, and argument checking, on real callables and processes."""

from __future__ import annotations

import sys

import pytest
import trio

from node.arguments import check_arguments
from node.config import ProcessEngineSettings, ToolContract
from node.engines.env import arguments_as_env
from node.engines.process import ProcessEngine
from node.engines.python import PythonEngine
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


def py(func: str) -> ToolContract:
    return ToolContract(name=func, engine="python", engine_spec={"callable": f"tests.sample_tools:{func}"})


def proc(command: list[str], **spec) -> ToolContract:
    return ToolContract(name="p", engine="process", engine_spec={"command": command, **spec})


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
        proc(["sh", "-c", 'printf \'{"got": "%s", "n": %s}\' "$word" "$n"'], env={"FIXED": "1"}),
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


@pytest.mark.parametrize("name", ["PATH", "LD_PRELOAD", "PYTHONPATH", "HOME", "1abc", "a-b", "CACHE_BUST"])
def test_protected_or_invalid_env_names_are_refused(name):
    with pytest.raises(InvalidArguments, match="argument"):
        arguments_as_env("t", {name: "v"})


def test_argument_may_not_override_contract_env():
    with pytest.raises(InvalidArguments, match="override a variable"):
        arguments_as_env("t", {"LANG": "x"}, reserved={"LANG"})
    assert arguments_as_env("t", {"a": [1, 2], "b": True, "c": "s"}) == {"a": "[1,2]", "b": "true", "c": "s"}


def test_argument_types_are_checked_and_values_never_echoed():
    params = [ToolParameter(name="n", type="number", required=True),
              ToolParameter(name="flag", type="boolean")]
    check_arguments("t", params, {"n": 1.5, "flag": False})
    with pytest.raises(InvalidArguments) as err:
        check_arguments("t", params, {"n": True, "flag": "SECRET-VALUE"})
    assert "argument 'n' must be number, got boolean" in err.value.message
    assert "SECRET-VALUE" not in err.value.message


async def test_argument_and_result_size_limits():
    from node.local_tools import LocalTools

    local = LocalTools([py("echo")], {"python": PythonEngine()}, max_argument_bytes=100, max_result_bytes=200)
    with pytest.raises(TooLarge, match="arguments are .* over the limit of 100"):
        await local.run("echo", {"text": "x" * 200}, soon())
    assert (await local.run("echo", {"text": "x" * 50}, soon())).text_output() == "x" * 50
    local.max_argument_bytes = 10_000
    with pytest.raises(TooLarge, match="result is .* over the limit of 200"):
        await local.run("echo", {"text": "y" * 500}, soon())
