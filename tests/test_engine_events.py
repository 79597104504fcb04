"""Cancellation, progress and log from the node's own engines (process and python), on real
processes and callables, and the bounds every hop reuses (`LimitedEvents`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from node.config import ProcessEngineSettings, ToolContract
from node.tools.engines.process import ProcessEngine
from node.tools.engines.python import PythonEngine
from node.tools.engines.reports import ReportReader, parse_progress
from protocols.call_events import SAMPLING, AskRefused, LogMessage, Progress
from protocols.errors import ContractError, InvalidArguments, ToolExecutionError
from protocols.event_limits import LimitedEvents, clean_text
from protocols.messages import ToolParameter


class Recorder:
    """A caller of our own that records what arrives (answers asks with a fixed result)."""

    def __init__(self, answer: dict[str, Any] | None = None) -> None:
        self.progresses: list[Progress] = []
        self.logs: list[LogMessage] = []
        self.asks: list[tuple[str, dict[str, Any]]] = []
        self.answer = answer
        self.first_progress = trio.Event()
        self.log_level: str | None = "debug"

    async def progress(self, update: Progress) -> None:  # noqa: D102 - the CallEvents protocol
        self.progresses.append(update)
        self.first_progress.set()

    async def log(self, message: LogMessage) -> None:
        self.logs.append(message)

    async def ask(self, method: str, params: dict[str, Any], deadline: float) -> dict[str, Any]:
        self.asks.append((method, params))
        if self.answer is None:
            raise AskRefused(-32600, "no")
        return self.answer


def proc(command: list[str]) -> ToolContract:
    return ToolContract.model_validate({"name": "p", "engine": "process", "engineSpec": {"command": command}})


def engine(max_output: int = 1 << 20) -> ProcessEngine:
    return ProcessEngine(ProcessEngineSettings(enabled=True, max_output_bytes=max_output), Path("/"))


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a zombie has stopped running)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def wait_for_file_lines(path: Path, count: int, deadline: float) -> list[str]:
    """Poll a file the tool writes until it has `count` lines (bounded by `deadline`)."""
    while trio.current_time() < deadline:
        if path.exists():
            lines = path.read_text().split()
            if len(lines) >= count:
                return lines
        await trio.sleep(0.02)
    raise AssertionError(f"the tool did not write {count} lines to {path} in time")


# ----- process: cancellation --------------------------------------------------------------


async def test_cancel_kills_child_and_grandchild_within_half_a_second(tmp_path):
    pids = tmp_path / "pids"
    # The tool starts a grandchild (a subshell running sleep) and a child sleep; both record PIDs.
    script = f"(sleep 60 & echo $! >> {pids}; wait) & sleep 60 & echo $! >> {pids}; echo $$ >> {pids}; wait"
    done = trio.Event()
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            async def call() -> None:
                try:
                    await engine().execute(proc(["sh", "-c", script]), {}, trio.current_time() + 60)
                finally:
                    done.set()

            nursery.start_soon(call)
            found = await wait_for_file_lines(pids, 3, trio.current_time() + 20)
            pid_list = [int(p) for p in found]
            assert all(alive(p) for p in pid_list)
            cancelled_at = trio.current_time()
            scope.cancel()
    assert done.is_set()
    # Every process of the tool is gone (killed and reaped, or reparented and killed) promptly.
    deadline = cancelled_at + 0.5
    while any(alive(p) for p in pid_list) and trio.current_time() < deadline:
        await trio.sleep(0.01)
    assert not [p for p in pid_list if alive(p)], "a process of the tool outlived the cancel"
    assert trio.current_time() - cancelled_at < 0.5


async def test_a_background_grandchild_does_not_outlive_a_finished_run(tmp_path):
    pidfile = tmp_path / "pid"
    script = f"sh -c 'sleep 60' > /dev/null 2>&1 & echo $! > {pidfile}; echo finished"
    with trio.fail_after(20):
        result = await engine().execute(proc(["sh", "-c", script]), {}, trio.current_time() + 20)
    assert result.text_output().strip() == "finished"
    pid = int(pidfile.read_text())
    deadline = trio.current_time() + 0.5
    while alive(pid) and trio.current_time() < deadline:
        await trio.sleep(0.01)
    assert not alive(pid)


# ----- process: progress and log ----------------------------------------------------------


async def test_progress_and_log_lines_reach_events_in_order_and_stay_out_of_stderr():
    script = (
        "echo 'praxis:progress 1/3 copying' >&2; echo 'praxis:log warning disk almost full' >&2;"
        "echo 'praxis:progress 2/3' >&2; echo 'praxis:progress 3' >&2; echo 'praxis:progress x/y bad' >&2;"
        "echo 'real trouble' >&2; echo result; exit 2"
    )
    events = Recorder()
    with pytest.raises(ToolExecutionError) as err:
        await engine().execute(proc(["sh", "-c", script]), {}, trio.current_time() + 20, events)
    assert events.progresses == [Progress(1, 3, "copying"), Progress(2, 3, None), Progress(3, None, None)]
    assert events.logs == [LogMessage("warning", "disk almost full", "tool")]
    # Reports are not error output; a malformed report is.
    assert "praxis:progress 1/3" not in err.value.message and "disk almost full" not in err.value.message
    assert "x/y bad" in err.value.message and "real trouble" in err.value.message


async def test_a_flood_of_100000_progress_lines_is_rate_limited_and_the_result_returns():
    script = [sys.executable, "-c",
              "import sys\n"
              "w = sys.stderr.write\n"
              "for i in range(1, 100001): w(f'praxis:progress {i}/100000 line {i}\\n')\n"
              "print('done')"]
    events = Recorder()
    started = trio.current_time()
    result = await engine(max_output=1000).execute(proc(script), {}, trio.current_time() + 60, events)
    elapsed = trio.current_time() - started
    assert result.text_output().strip() == "done"
    values = [p.progress for p in events.progresses]
    assert values == sorted(set(values)), "progress went backwards or repeated"
    # A burst of 20, then 10 per second: bounded by the run's length, whatever the tool printed.
    assert 1 <= len(values) <= 20 + 10 * elapsed + 1
    assert values[0] == 1


# ----- python: the praxis_events parameter ------------------------------------------------


def steps_contract(params: list[dict[str, Any]] | None = None) -> ToolContract:
    return ToolContract.model_validate({
        "name": "steps", "engine": "python", "engineSpec": {"callable": "tests.sample_tools:steps"},
        "params": params if params is not None else [{"name": "count", "type": "number"}]})


async def test_python_tool_reports_progress_through_praxis_events():
    events = Recorder()
    result = await PythonEngine().execute(steps_contract(), {"count": 5}, trio.current_time() + 10, events)
    assert result.text_output() == "5 steps"
    assert [p.progress for p in events.progresses] == [1, 2, 3, 4, 5]
    assert events.progresses[0] == Progress(1, 5, "step 1")
    assert events.logs == [LogMessage("info", "steps done", None)]


async def test_python_tool_without_the_parameter_gets_no_events_and_callers_cannot_pass_it():
    engine_ = PythonEngine()
    echo = ToolContract(name="echo", engine="python", engine_spec={"callable": "tests.sample_tools:echo"},
                        params=[{"name": "text"}])
    assert (await engine_.execute(echo, {"text": "hi"}, trio.current_time() + 5, Recorder())).text_output() == "hi"
    names = ToolContract(name="names", engine="python", engine_spec={"callable": "tests.sample_tools:names"},
                         accept_undeclared_arguments=True)
    with pytest.raises(InvalidArguments, match="praxis_events"):
        await engine_.execute(names, {"praxis_events": 1}, trio.current_time() + 5)


def test_a_declared_parameter_may_not_take_the_events_name():
    with pytest.raises(ValueError, match="praxis_events"):
        steps_contract([{"name": "praxis_events"}])
    contract = steps_contract()  # a contract built in code and changed after its checks
    contract.params = [ToolParameter(name="praxis_events")]
    with pytest.raises(ContractError, match="praxis_events"):
        PythonEngine().check_contract(contract)


# ----- the bounds -------------------------------------------------------------------------


async def test_limited_events_clean_cut_and_keep_progress_increasing():
    inner = Recorder()
    events = LimitedEvents(inner, max_text=20)
    await events.progress(Progress(1, None, "a\x1b[31mred\x07\u202eevil\nnext" + "x" * 50))
    await events.progress(Progress(1, None, "same"))  # not growing: dropped
    await events.progress(Progress(0.5, None, "back"))  # going back: dropped
    await events.progress(Progress(float("nan"), None, None))
    await events.log(LogMessage("loud", {"big": "y" * 20000}, "l\x00g"))
    assert len(inner.progresses) == 1
    message = inner.progresses[0].message
    assert message is not None and len(message) <= 20 and "\x1b" not in message and "\u202e" not in message
    assert inner.logs[0].level == "info" and isinstance(inner.logs[0].data, str)
    assert len(inner.logs[0].data) <= 20 and inner.logs[0].logger == "lg"
    assert events.dropped == 3
    assert clean_text("tab\there", 100) == "tab here"


async def test_limited_events_bound_asks():
    gate = trio.Event()

    class Slow(Recorder):
        async def ask(self, method: str, params: dict[str, Any], deadline: float) -> dict[str, Any]:
            await gate.wait()
            return {"ok": True}

    events = LimitedEvents(Slow(), max_pending_asks=1, max_ask_bytes=100, max_ask_seconds=0.2)
    with pytest.raises(AskRefused, match="over 100 bytes"):
        await events.ask(SAMPLING, {"x": "y" * 200}, trio.current_time() + 5)
    async with trio.open_nursery() as nursery:
        refused: list[AskRefused] = []

        async def first() -> None:
            try:
                await events.ask(SAMPLING, {}, trio.current_time() + 5)
            except AskRefused as exc:
                refused.append(exc)

        nursery.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(AskRefused, match="too many"):
            await events.ask(SAMPLING, {}, trio.current_time() + 5)
    assert refused and "in time" in refused[0].message  # the first waited out max_ask_seconds
    gate.set()
    assert await LimitedEvents(Recorder({"a": 1})).ask(SAMPLING, {}, trio.current_time() + 5) == {"a": 1}


async def test_report_reader_treats_long_lines_as_stderr():
    inner = Recorder()
    reader = ReportReader(inner, 1 << 20)
    assert await reader.feed(b"praxis:progress 1 " + b"z" * 5000 + b"\npraxis:prog")
    assert await reader.feed(b"ress 2 ok\nlast")
    await reader.finish()
    assert [p.progress for p in inner.progresses] == [2]
    assert bytes(reader.stderr).startswith(b"praxis:progress 1 zzz") and bytes(reader.stderr).endswith(b"\nlast")
    assert parse_progress("inf/3") is None and parse_progress("1/2 x y") == Progress(1, 2, "x y")


async def test_cancelling_a_call_through_a_node_kills_the_process_tool(tmp_path):
    from tests.helpers import make_node, node_config

    pids = tmp_path / "pids"
    tool = {"name": "sleeper", "engine": "process",
            "engineSpec": {"command": ["sh", "-c", f"sleep 60 & echo $! >> {pids}; echo $$ >> {pids}; wait"]}}
    node = make_node(node_config("cancel", [tool], engines={"process": {"enabled": True}}))
    async with node.running():
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: node.mesh.call("sleeper", {}, timeout=60, events=Recorder()))
                pid_list = [int(p) for p in await wait_for_file_lines(pids, 2, trio.current_time() + 20)]
                cancelled_at = trio.current_time()
                scope.cancel()
        deadline = cancelled_at + 0.5
        while any(alive(p) for p in pid_list) and trio.current_time() < deadline:
            await trio.sleep(0.01)
        assert not [p for p in pid_list if alive(p)]


class BrokenCaller(Recorder):
    """A caller whose event channel fails (its stream broke): counts the attempts."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    async def progress(self, update: Progress) -> None:
        self.attempts += 1
        raise RuntimeError("stream gone")


async def test_a_caller_that_cannot_take_reports_does_not_fail_the_run():
    script = "for i in 1 2 3; do echo \"praxis:progress $i\" >&2; done; echo ok"
    caller = BrokenCaller()
    result = await engine().execute(proc(["sh", "-c", script]), {}, trio.current_time() + 20, caller)
    assert result.text_output().strip() == "ok"
    assert caller.attempts == 1  # tried once, then reports stopped
