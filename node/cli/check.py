"""`praxis-node check -c FILE`: every problem of a config at once, without starting anything.

Exit 0 and `FILE: ok (N tools: ...)` when the config can start; exit 2 and the list of problems
(on stderr, one a line, each at its key) otherwise. It checks what `load_config` checks (every
section, each tool's engineSpec, mounts, cwd folders, imports of python callables: those
modules are imported, as the node itself would at start) and what the node reads at start
besides the file: its key file, which is read when it exists and never created here.
Values of secret-like keys are never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from node.cli.errors import EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:  # node.config is imported when `check` runs: other commands need not load it
    from node.config import ConfigProblem, NodeConfig


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser],
               parents: list[argparse.ArgumentParser] | None = None) -> None:
    """Register `check` on the CLI's subcommands."""
    check = sub.add_parser("check", parents=parents or [],
                           help="report every problem of a config without starting anything")
    check.add_argument("-c", "--config", required=True, help="YAML config file")
    check.set_defaults(func=cmd_check)


async def cmd_check(args: argparse.Namespace) -> int:
    from node.config import ConfigError, load_config

    path = Path(args.config)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    problems = start_problems(config)
    if problems:
        print(ConfigError.listing(str(path), problems), file=sys.stderr)
        return EXIT_USAGE
    names = [t.name for t in config.agent.tools]
    tools = f"{len(names)} tool{'' if len(names) == 1 else 's'}" + (f": {', '.join(names)}" if names else "")
    print(f"{path}: ok ({tools})")
    return EXIT_OK


def start_problems(config: NodeConfig) -> list[ConfigProblem]:
    """What stops a node with this (loaded) config at start besides the file: its key file.

    An existing key file is read with the node's own loader (a regular file of at most 8 KiB
    holding a key); an absent one must be creatable, but is not created.
    """
    from node.config import ConfigError, ConfigProblem

    path = config.resolve_path(config.p2p.key_file)
    if path.exists():
        from node.mesh.identity import load_or_create_identity  # libp2p: only when there is a key to read

        try:
            load_or_create_identity(path)  # the file exists: this only reads it
        except ConfigError as exc:
            return [ConfigProblem("p2p.key_file", str(exc).removeprefix("p2p.key_file: "))]
        return []
    if path.is_symlink():
        return [ConfigProblem("p2p.key_file", f"{path} is a symbolic link to nothing; point p2p.key_file at "
                                              "the key file, or at a path that does not exist yet")]
    folder = path.parent
    if not folder.is_dir():
        return [ConfigProblem("p2p.key_file", f"{path}: the folder {folder} does not exist, so the node cannot "
                                              "create its key there on first start")]
    if not os.access(folder, os.W_OK | os.X_OK):
        return [ConfigProblem("p2p.key_file", f"{path}: the folder {folder} is not writable, so the node cannot "
                                              "create its key there on first start")]
    return []
