"""`praxis-node init [FOLDER]`: a commented starter config, and what to run next.

It writes FOLDER/node.yaml (a python tool, a process tool, the MCP endpoint on) and
FOLDER/tools.py (the python tool's function), and never overwrites either.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from node.cli.errors import EXIT_OK, UsageError

CONFIG_NAME = "node.yaml"
TOOLS_NAME = "tools.py"
P2P_PORT = 4001
MCP_PORT = 8090

CONFIG = """\
# A praxis node: its tools, where it listens, whom it joins. Written by `praxis-node init`.
# Check it with `praxis-node check -c {config}`; start it with `praxis-node run -c {config}`.
# Relative paths (key_file, a tool's cwd) are resolved against this file's folder.
# Any scalar or list key can be overridden from the environment: PRAXIS_<SECTION>_<KEY>,
# e.g. PRAXIS_P2P_PORT=4002 or PRAXIS_MCP_PORT=8091 for a second node on this machine.

agent:
  name: {name}                       # how peers and `praxis-node tools` name this node
  tools:
    # A python tool: the function greet in tools.py, beside this file (this folder is on the
    # import path of its python tools). It runs inside the node: for quick, trusted code.
    - name: greet
      description: Greet someone by name
      engine: python
      params:                        # checked on every call; nothing else is accepted
        - {{name: name, type: string, description: who to greet, required: true}}
      engineSpec:
        callable: tools:greet        # module:function

    # A process tool: a command run on this machine, without isolation. Each declared
    # parameter becomes an environment variable of the same name; stdout is the result.
    - name: count_words
      description: Count the words of a text (runs wc on this machine)
      engine: process
      params:
        - {{name: text, type: string, description: the text, required: true}}
      engineSpec:
        command: ["sh", "-c", 'printf "%s" "$text" | wc -w']
        timeout: 10                  # seconds
      # Who else may run it. Peers may call a process tool only when its own allow_peers
      # names them: their peer IDs, or "*" for every peer that connects. Empty (or no list):
      # only this node's own clients (its MCP endpoint, `praxis-node call --node ...`).
      allow_peers: []

p2p:
  host: 127.0.0.1                    # 0.0.0.0 to accept peers from other machines
  port: {p2p_port}                         # 0: any free port
  bootstrap_nodes: []                # other nodes to join: /ip4/127.0.0.1/tcp/4002/p2p/12D3KooW...
  enable_mdns: false                 # true: also find nodes on the local network
  key_file: identity.key             # this node's identity, created on first start (keep it private)

mcp:
  enabled: true                      # MCP clients (and `praxis-node ... --node`) reach the mesh here:
  host: 127.0.0.1                    #   http://127.0.0.1:{mcp_port}/mcp
  port: {mcp_port}
  # token: ...                       # required off loopback; clients send "Authorization: Bearer ..."

engines:
  process:
    enabled: true                    # process tools run on this host without isolation: opt in
"""

TOOLS = '''\
"""Python tools of this node: `callable: tools:NAME` in node.yaml names a function here.

Each function is called with the parameters its tool declares, as keyword arguments. It may
be sync or async, and returns a string or a JSON-able dict or list. It runs inside the node's
event loop: keep it quick (use a process or dagger tool for slow or untrusted work).
"""


def greet(name: str) -> str:
    """Greet someone by name."""
    return f"Hello, {name}!"
'''


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser],
               parents: list[argparse.ArgumentParser] | None = None) -> None:
    """Register `init` on the CLI's subcommands."""
    init = sub.add_parser("init", parents=parents or [],
                          help="write a commented starter config (node.yaml and tools.py) into a folder")
    init.add_argument("folder", nargs="?", default=".", help="where to write them (default: here)")
    init.set_defaults(func=cmd_init)


def node_name(folder: Path) -> str:
    """A node name from the folder's name (letters, digits, '-', '_', '.'), else "my-node"."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", folder.resolve().name).strip("-.")[:64]
    return name or "my-node"


async def cmd_init(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    config, tools = folder / CONFIG_NAME, folder / TOOLS_NAME
    for existing in (config, tools):
        if existing.exists() or existing.is_symlink():
            raise UsageError(f"{existing} already exists: init never overwrites a file; "
                             "choose another folder (praxis-node init FOLDER)")
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with config.open("x", encoding="utf-8") as out:  # "x": never over a file that appeared meanwhile
            out.write(CONFIG.format(config=config, name=node_name(folder), p2p_port=P2P_PORT, mcp_port=MCP_PORT))
        with tools.open("x", encoding="utf-8") as out:
            out.write(TOOLS)
    except FileExistsError as exc:
        raise UsageError(f"{exc.filename} already exists: init never overwrites a file") from None
    except OSError as exc:
        raise UsageError(f"cannot write into {folder}: {exc.strerror or exc}") from None
    url = f"http://127.0.0.1:{MCP_PORT}/mcp"
    steps = [(f"praxis-node check -c {config}", "every problem of the config, without starting anything"),
             (f"praxis-node run -c {config}", "start the node (Ctrl-C stops it)"),
             (f"praxis-node tools --node {url}", "in another terminal: the mesh's tools"),
             (f"praxis-node call --node {url} greet name=Ada", "call a tool")]
    width = max(len(command) for command, _ in steps)
    print(f"wrote {config} (a python tool, a process tool, the MCP endpoint on) and {tools}\nnext:")
    for command, what in steps:
        print(f"  {command.ljust(width)}  # {what}")
    return EXIT_OK
