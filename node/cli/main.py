"""`praxis-node run | id | check | init | call | tools | peers | status | mcp | demo`.

Every command imports only what it uses: `call`, `tools`, `peers` and `status` with `--node` need no
libp2p, no MCP SDK, no pydantic and no config (see node/cli/remote_endpoint.py), so they start
in a fraction of a second. Whatever goes wrong ends as one line on stderr and an exit code
from node/cli/errors.py (`--debug` adds the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import trio

from node.cli import check, init
from node.cli.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_TOOL_ERROR, CliError, UsageError, explain
from node.cli.logs import LOG_FORMATS, configure_logging
from node.cli.output import print_peers, print_result, print_status, print_tool_description, print_tools
from node.cli.progress import CallDisplay
from node.cli.remote import CallResult, RemoteNode, split_arguments, typed_arguments, unknown_tool_message
from node.runtime.gc_tuning import tune_for_a_long_running_node

if TYPE_CHECKING:
    from node.config import NodeConfig

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
REMOTE_COMMANDS = ("call", "tools", "peers", "status")
NODE_COMMANDS = ("run", "mcp", "demo")  # they run nodes until stopped


def _load(path: str) -> NodeConfig:
    from pathlib import Path

    from node.config import load_config

    return load_config(Path(path))


async def _until_signalled(cancel: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            print(f"\nreceived {signal.Signals(signum).name}; stopping", file=sys.stderr)
            cancel.cancel()
            return


async def cmd_run(args: argparse.Namespace) -> int:
    from node.app import Node

    config = _load(args.config)
    configure_logging(args.log_level, config.agent.name, args.log_format)
    node = Node(config)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_until_signalled, nursery.cancel_scope)
        async with node.running():
            if args.announce:
                print(json.dumps({"event": "ready", "name": config.agent.name, "peerId": node.peer_id,
                                  "addrs": node.addrs, "mcpUrl": node.mcp_url}), flush=True)
            await trio.sleep_forever()
    return EXIT_OK


async def cmd_id(args: argparse.Namespace) -> int:
    from node.mesh.host import listen_multiaddr
    from node.mesh.identity import load_or_create_identity, peer_id_of

    config = _load(args.config)
    key_pair = load_or_create_identity(config.resolve_path(config.p2p.key_file))
    peer_id = peer_id_of(key_pair).to_string()
    print(f"peer ID: {peer_id}")
    where = listen_multiaddr(config.p2p)
    note = "  (port 0: the OS picks a free port at start)" if config.p2p.port == 0 else ""
    print(f"listens: {where}/p2p/{peer_id}{note}")
    return EXIT_OK


def _where(args: argparse.Namespace) -> str:
    """How the user named the node, for hints: `--node URL` or `--peer ADDR`."""
    return f"--node {args.node}" if args.node else f"--peer {args.peer}"


def _open_remote(args: argparse.Namespace) -> AbstractAsyncContextManager[RemoteNode]:
    """The node that `--node URL` or `--peer MULTIADDR` names (argparse requires one of them)."""
    if args.node:
        from node.cli.remote_endpoint import EndpointRemote

        return EndpointRemote.open(args.node, args.token, args.timeout)
    if args.peer.startswith(("http://", "https://")):
        raise UsageError(f"--peer takes a node's multiaddr (e.g. /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...); "
                         f"for the URL of its MCP endpoint use --node {args.peer}")
    from node.cli.remote_peer import PeerRemote  # libp2p: imported only for --peer

    return PeerRemote.open(args.peer, args.timeout)


async def cmd_call(args: argparse.Namespace) -> int:
    pairs = split_arguments(args.arguments)  # a malformed argument fails before anything is dialled
    display = CallDisplay(args.tool, enabled=not args.json)
    interrupted = False
    async with _open_remote(args) as remote:
        tool = await remote.find_tool(args.tool)
        arguments = typed_arguments(pairs, tool.param_types() if tool is not None else {})
        result = CallResult.failure("interrupted")
        # Ctrl-C now cancels the call (the node is told, the work stops), then the CLI exits 130.
        with trio.open_signal_receiver(signal.SIGINT) as interrupts:
            async with trio.open_nursery() as nursery:

                async def cancel_on_interrupt() -> None:
                    nonlocal interrupted
                    async for _ in interrupts:
                        interrupted = True
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(cancel_on_interrupt)
                nursery.start_soon(display.run)
                result = await remote.call(tool.name if tool is not None else args.tool, arguments,
                                           timeout=args.timeout, on_progress=display.progress)
                nursery.cancel_scope.cancel()
        display.clear()
        if interrupted:
            print("interrupted: the call was cancelled", file=sys.stderr)
            return EXIT_INTERRUPTED
        if result.is_error and result.unknown_tool:
            names = [] if tool is not None else [r.name for r in await remote.tools()]
            result = CallResult.failure(unknown_tool_message(args.tool, tool, names, _where(args)),
                                        unknown_tool=True)
    print_result(result, as_json=args.json)
    return EXIT_TOOL_ERROR if result.is_error else EXIT_OK


async def cmd_tools(args: argparse.Namespace) -> int:
    async with _open_remote(args) as remote:
        rows = await remote.tools()
    if args.describe is None:
        print_tools(rows, as_json=args.json)
        return EXIT_OK
    # NAME as listed, else the mesh's name for it (all its providers either way).
    listed = next((r for r in rows if r.name == args.describe), None) or \
        next((r for r in rows if r.mesh_name == args.describe), None)
    if listed is None:
        raise CliError(unknown_tool_message(args.describe, None, [r.name for r in rows], _where(args)))
    print_tool_description([r for r in rows if r.mesh_name == listed.mesh_name], as_json=args.json)
    return EXIT_OK


async def cmd_status(args: argparse.Namespace) -> int:
    async with _open_remote(args) as remote:
        status = await remote.status()
    print_status(status, as_json=args.json)
    return EXIT_OK


async def cmd_peers(args: argparse.Namespace) -> int:
    async with _open_remote(args) as remote:
        rows = await remote.peers()
    print_peers(rows, as_json=args.json)
    return EXIT_OK


async def cmd_mcp(args: argparse.Namespace) -> int:
    """Run a node that speaks MCP on stdin/stdout (for desktop clients that start a command)."""
    from node.app import Node
    from node.cli.settle import wait_until_settled

    config = _load(args.config)
    configure_logging(args.log_level, config.agent.name, args.log_format)  # stderr: stdout carries MCP
    node = Node(config)
    node.serve_mcp_http = False
    async with node.running():
        # Let the mesh settle first, so the client's first tools/list shows it (later changes
        # reach the client as tools/list_changed notifications).
        await wait_until_settled(node, args.wait_for_peers)
        await node.mcp_endpoint.serve_stdio()
    return EXIT_OK


async def cmd_demo(args: argparse.Namespace) -> int:
    from node.cli.demo import run_demo

    configure_logging("WARNING")
    return await run_demo(args.nodes, keep_dir=args.keep)


def positive_seconds(text: str) -> float:
    """`--timeout`: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < 1e7:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0") from None
    return value


def log_level(text: str) -> str:
    """`--log-level`: one of LOG_LEVELS, in any case."""
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a log level: use {', '.join(LOG_LEVELS[:-1])} "
                                         f"or {LOG_LEVELS[-1]} (any case)")
    return level


class _Version(argparse.Action):
    """`--version`: the installed package's version (looked up only when asked)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("praxis-node")
        except PackageNotFoundError:
            text = "unknown (not installed as a package)"
        print(f"praxis-node {text}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="praxis-node", description="A peer-to-peer agent node.")
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback behind an error (also accepted after the command)")
    # Each command accepts --debug too; SUPPRESS keeps `praxis-node --debug CMD` from being reset.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[common], help="run a node in the foreground (Ctrl-C stops it)")
    run.add_argument("-c", "--config", required=True, help="YAML config file")
    run.add_argument("--log-level", type=log_level, default="INFO", help="DEBUG, INFO (default), WARNING or ERROR")
    run.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                     help="text (default) or json: one JSON object per line (time, level, logger, message)")
    run.add_argument("--announce", action="store_true",
                     help="print one JSON line with the peer ID and addresses once listening")
    run.set_defaults(func=cmd_run)

    ident = sub.add_parser("id", parents=[common], help="print the peer ID and listen address of a config")
    ident.add_argument("-c", "--config", required=True)
    ident.set_defaults(func=cmd_id)

    check.add_parser(sub, parents=[common])
    init.add_parser(sub, parents=[common])

    def remote(p: argparse.ArgumentParser) -> None:
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--peer", help="multiaddr of a running node, with /p2p/<id> (talks libp2p)")
        where.add_argument("--node", help="URL of a running node's MCP endpoint, e.g. http://127.0.0.1:8090/mcp")
        p.add_argument("--token", default=os.environ.get("PRAXIS_MCP_TOKEN"),
                       help="bearer token for --node (default: $PRAXIS_MCP_TOKEN)")
        p.add_argument("--json", action="store_true", help="machine-readable output")

    def timeout(p: argparse.ArgumentParser, help: str) -> None:
        p.add_argument("--timeout", type=positive_seconds, default=None, help=help)

    call = sub.add_parser("call", parents=[common], help="call a tool through a running node")
    remote(call)
    timeout(call, "seconds to wait for the result, from the start; the call is cancelled then "
                  "(default: the node's call timeout, limits.call_timeout_seconds)")
    call.add_argument("tool")
    call.add_argument("arguments", nargs="*", metavar="key=value",
                      help="arguments; values are JSON unless the parameter is a string")
    call.set_defaults(func=cmd_call)

    tools = sub.add_parser("tools", parents=[common], help="list the tools a running node knows of")
    remote(tools)
    timeout(tools, "seconds (default 30)")
    tools.add_argument("--describe", metavar="NAME",
                       help="show one tool: its parameters (name, type, required, description) and who serves it")
    tools.set_defaults(func=cmd_tools)

    peers = sub.add_parser("peers", parents=[common], help="list a running node's peers")
    remote(peers)
    timeout(peers, "seconds (default 30)")
    peers.set_defaults(func=cmd_peers)

    status = sub.add_parser("status", parents=[common],
                            help="a running node: itself, its peers, the mesh's tools and their calls")
    remote(status)
    timeout(status, "seconds (default 30)")
    status.set_defaults(func=cmd_status)

    mcp = sub.add_parser("mcp", parents=[common], help="run a node that serves the mesh's tools over MCP on stdio")
    mcp.add_argument("-c", "--config", required=True, help="YAML config file")
    mcp.add_argument("--log-level", type=log_level, default="WARNING",
                     help="DEBUG, INFO, WARNING (default) or ERROR; logs go to stderr")
    mcp.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                     help="text (default) or json: one JSON object per line (time, level, logger, message)")
    mcp.add_argument("--wait-for-peers", type=float, default=5.0, metavar="SECONDS",
                     help="at most this long, wait for the mesh to settle before serving: every bootstrap "
                          "peer's card, and the peers each of them lists (default 5)")
    mcp.set_defaults(func=cmd_mcp)

    demo = sub.add_parser("demo", parents=[common], help="start a mesh of nodes on 127.0.0.1 and call across it")
    demo.add_argument("--nodes", type=int, default=3, help="number of nodes (2-16, default 3)")
    demo.add_argument("--keep", action="store_true",
                      help="keep the mesh running (Ctrl-C stops it; one node serves the live mesh page) "
                           "and keep the demo's folder (configs, logs)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], Awaitable[int]] = args.func
    if args.command in REMOTE_COMMANDS:
        configure_logging("DEBUG" if args.debug else "WARNING")
    if args.command in NODE_COMMANDS:
        tune_for_a_long_running_node()
    try:
        return trio.run(func, args)
    except BaseException as exc:  # trio wraps errors from nurseries in exception groups
        if isinstance(exc, SystemExit):
            raise
        where = (args.node or args.peer) if args.command in REMOTE_COMMANDS else None
        line, code = explain(exc, args.command, where)
        if args.debug:
            import traceback

            traceback.print_exception(exc)
        if code != EXIT_INTERRUPTED:
            print(line, file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
