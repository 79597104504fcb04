"""Test doubles for the call protocol tests: an execution engine that talks while it runs (a
double of the engine only: the real engines' progress is another part of the work), and a
caller's `CallEvents` that records what reaches it and answers questions."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.crypto.ed25519 import create_new_key_pair

from node.app import Node
from node.config import ToolContract
from protocols.call_events import NO_EVENTS, SAMPLING, AskRefused, CallEvents, LogMessage, Progress
from protocols.messages import ToolResult
from tests.helpers import node_config, py_tool, wait_all_know

# The tools the double serves (python contracts; the double runs them instead of the callable).
CHATTY = py_tool("chatty", "noop", [{"name": "steps", "type": "number"}])
HANG = py_tool("hang", "noop")
FLOOD = py_tool("flood", "noop", [{"name": "progress", "type": "number"}, {"name": "logs", "type": "number"},
                                  {"name": "log_bytes", "type": "number"}])
ECHO = py_tool("echo", "echo", [{"name": "text", "type": "string", "required": True}])


@dataclass
class TalkingEngine:
    """Test double of an `ExecutionEngine`: `chatty` reports `steps` progress updates, logs at
    debug and warning, asks the caller one sampling question and returns its answer (or the
    refusal, as an error result); `hang`
    waits until cancelled and records that it was; `flood` emits `progress` updates and `logs`
    log messages of `log_bytes` each as fast as it can; `echo` returns its text."""

    started: trio.Event = field(default_factory=trio.Event)
    cancelled: trio.Event = field(default_factory=trio.Event)
    finished: trio.Event = field(default_factory=trio.Event)
    runs: int = 0

    def check_contract(self, contract: ToolContract) -> None:
        return None

    async def execute(self, contract: ToolContract, arguments: dict[str, Any], deadline: float,
                      events: CallEvents = NO_EVENTS) -> ToolResult:
        self.runs += 1
        if contract.name == "chatty":
            steps = int(arguments.get("steps", 3))
            for step in range(1, steps + 1):
                await events.progress(Progress(step, steps, f"step {step}"))
            await events.log(LogMessage("debug", "too low to be sent"))
            await events.log(LogMessage("warning", {"note": "careful"}, "engine"))
            try:
                answer = await events.ask(SAMPLING, {"messages": [{"role": "user", "content": {
                    "type": "text", "text": "what is six times seven?"}}], "maxTokens": 10}, deadline)
            except AskRefused as refused:  # what the engine was told, for the test to read
                return ToolResult.text(f"refused {refused.code}: {refused.message}", is_error=True)
            return ToolResult.text(json.dumps(answer, sort_keys=True))
        if contract.name == "hang":
            self.started.set()
            try:
                await trio.sleep_forever()
            finally:
                self.cancelled.set()  # only a cancellation gets here
        if contract.name == "flood":
            self.started.set()
            for i in range(int(arguments.get("progress", 0))):
                await events.progress(Progress(i + 1))
            text = "x" * int(arguments.get("log_bytes", 10))
            for _ in range(int(arguments.get("logs", 0))):
                await events.log(LogMessage("error", text))
            self.finished.set()
            return ToolResult.text("flooded")
        return ToolResult.text(str(arguments.get("text", "")))

    async def aclose(self) -> None:
        return None


@dataclass
class RecordingEvents:
    """A caller that records progress and log messages and answers sampling with `answer`."""

    answer: dict[str, Any] = field(default_factory=lambda: {
        "role": "assistant", "content": {"type": "text", "text": "42"}, "model": "test-double"})
    log_level: str = "info"
    progress_seen: list[Progress] = field(default_factory=list)
    logs: list[LogMessage] = field(default_factory=list)
    asked: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refuse: AskRefused | None = None

    async def progress(self, update: Progress) -> None:
        self.progress_seen.append(update)

    async def log(self, message: LogMessage) -> None:
        self.logs.append(message)

    async def ask(self, method: str, params: dict[str, Any], deadline: float) -> dict[str, Any]:
        self.asked.append((method, params))
        if self.refuse is not None:
            raise self.refuse
        return self.answer


async def start_node(stack: AsyncExitStack, name: str, tools: list[dict[str, Any]] | None = None,
                     engine: TalkingEngine | None = None, bootstrap: list[str] | None = None,
                     **sections: Any) -> Node:
    """A running node whose python tools run on `engine` (when given)."""
    node = Node(node_config(name, tools, bootstrap=bootstrap, **sections), key_pair=create_new_key_pair(),
                engines={"python": engine} if engine is not None else None)  # type: ignore[dict-item]
    await stack.enter_async_context(node.running())
    return node


async def start_chain(
    stack: AsyncExitStack, tools: list[dict[str, Any]], engine: TalkingEngine
) -> tuple[Node, Node, Node]:
    """a -> b -> c, each bootstrapped from the next; c runs `tools` on `engine`. Returns once a
    and b know every tool, so a call from a reaches c in two hops."""
    c = await start_node(stack, "c", tools, engine)
    b = await start_node(stack, "b", bootstrap=c.addrs[:1])
    a = await start_node(stack, "a", bootstrap=b.addrs[:1])
    await wait_all_know([a, b], {tool["name"] for tool in tools})
    return a, b, c
