"""A TEST DOUBLE of an execution engine (the engine only: the node, its MCP endpoint, the MCP
clients and the CLI around it are real). The real engines' progress is another piece of work;
this one says, through `CallEvents`, exactly what a test needs, and records what happened to it.

Inject it as `Node(config, engines={"python": EventEngine()})` with tools named after its
behaviours (`tools()` gives their contracts):

- `talk`: 5 progress reports 0.15 s apart, then a burst of 100, then 4 log messages (debug,
  info, warning, error); returns "done";
- `ask`: asks the caller a sampling and an elicitation question; returns what each gave
  (the answer, or the refusal's code and message) as structured content;
- `ask_many`: asks 6 sampling questions at once; returns each one's answer or refusal code;
- `wait`: reports progress 1 and 2, then waits `seconds` and returns "waited", or reaches the
  deadline first and raises `ToolTimeout`; records a cancel of its scope;
- `was_cancelled`: waits (at most `seconds`, default 10) until a `wait` was cancelled;
  returns "cancelled" or "not cancelled", and forgets it.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from node.config import ToolContract
from protocols.call_events import ELICITATION, NO_EVENTS, SAMPLING, AskRefused, CallEvents, LogMessage, Progress
from protocols.errors import ToolTimeout
from protocols.messages import ToolResult

SECONDS = [{"name": "seconds", "type": "number", "required": False}]
SAMPLING_PARAMS = {"messages": [{"role": "user", "content": {"type": "text", "text": "Name a colour"}}],
                   "maxTokens": 20}
ELICITATION_PARAMS = {"message": "Your name?", "requestedSchema": {
    "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}


def tools() -> list[dict[str, Any]]:
    """The contracts of the double's tools (engine `python`: the double stands in for it)."""
    def tool(name: str, params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {"name": name, "engine": "python", "params": params or [],
                "engineSpec": {"callable": "tests.sample_tools:noop"}}
    return [tool("talk"), tool("ask"), tool("ask_many"), tool("wait", SECONDS), tool("was_cancelled", SECONDS)]


class EventEngine:
    """Test double: an engine whose tools emit call events and record cancellation."""

    def __init__(self) -> None:
        self.cancelled = trio.Event()
        self.started = trio.Event()  # a `wait` is running
        self.asked: list[dict[str, Any]] = []

    def check_contract(self, contract: ToolContract) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def execute(self, contract: ToolContract, arguments: dict[str, Any], deadline: float,
                      events: CallEvents = NO_EVENTS) -> ToolResult:
        name = contract.name
        if name == "talk":
            for n in range(1, 6):
                await events.progress(Progress(n, 105, f"step {n}"))
                await trio.sleep(0.15)  # the tool's own pace: slower than the endpoint's interval
            for n in range(6, 106):
                await events.progress(Progress(n, 105))
            for level in ("debug", "info", "warning", "error"):
                await events.log(LogMessage(level, {"said": level}, "talk"))
            return ToolResult.text("done")
        if name == "ask":
            answers: dict[str, Any] = {}
            for method, params in ((SAMPLING, SAMPLING_PARAMS), (ELICITATION, ELICITATION_PARAMS)):
                try:
                    answers[method] = {"answer": await events.ask(method, params, deadline)}
                except AskRefused as exc:
                    answers[method] = {"code": exc.code, "message": exc.message}
            self.asked.append(answers)
            result = ToolResult.text(json.dumps(answers))
            result.structured_content = answers
            return result
        if name == "ask_many":
            outcomes: list[Any] = [None] * 6

            async def one(n: int) -> None:
                try:
                    outcomes[n] = (await events.ask(SAMPLING, SAMPLING_PARAMS, deadline))["model"]
                except AskRefused as exc:
                    outcomes[n] = exc.code

            async with trio.open_nursery() as nursery:
                for n in range(6):
                    nursery.start_soon(one, n)
            result = ToolResult.text(json.dumps(outcomes))
            result.structured_content = {"outcomes": outcomes}
            return result
        if name == "wait":
            self.started.set()
            await events.progress(Progress(1, 2, "started"))
            await events.progress(Progress(2, None, "waiting"))
            seconds = arguments.get("seconds")
            until = trio.current_time() + seconds if seconds else deadline
            try:
                await trio.sleep_until(min(until, deadline))
            except trio.Cancelled:
                self.cancelled.set()
                raise
            if until >= deadline:
                raise ToolTimeout(f"tool {name!r} timed out (the test double waited for its deadline)")
            return ToolResult.text("waited")
        if name == "was_cancelled":
            with trio.move_on_after(float(arguments.get("seconds") or 10)):
                await self.cancelled.wait()
            done, self.cancelled = self.cancelled.is_set(), trio.Event()
            self.started = trio.Event()
            return ToolResult.text("cancelled" if done else "not cancelled")
        raise AssertionError(f"the test double has no tool {name!r}")
