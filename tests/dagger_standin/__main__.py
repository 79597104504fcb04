"""TEST STAND-IN command line.

`python -m tests.dagger_standin --docker-host unix://... --state-dir D`:

The session token comes from the DAGGER_STANDIN_TOKEN environment variable (never argv).
Listens on 127.0.0.1 only, prints one JSON line `{"port": N, "pid": P}` when ready, and serves
until it is terminated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import trio

from tests.dagger_standin.containers import DockerRunner
from tests.dagger_standin.http import StandinHTTPServer
from tests.dagger_standin.resolvers import StandinEngine


async def _main(args: argparse.Namespace, token: str) -> None:
    state_dir = Path(args.state_dir)
    runner = DockerRunner(docker=args.docker, host=args.docker_host, state_dir=state_dir)
    server = StandinHTTPServer(StandinEngine(runner, state_dir), token)
    listeners = await trio.open_tcp_listeners(args.port, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    print(json.dumps({"port": port, "pid": os.getpid()}), flush=True)
    await server.serve(listeners)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.dagger_standin", description=__doc__)
    parser.add_argument("--docker-host", required=True, help="unix:///path/to/private/docker.sock")
    parser.add_argument("--docker", default="docker", help="docker CLI to use")
    parser.add_argument("--state-dir", required=True, help="folder for snapshots and run copies")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    token = os.environ.get("DAGGER_STANDIN_TOKEN", "")
    if not token:
        sys.exit("DAGGER_STANDIN_TOKEN must be set")
    Path(args.state_dir).mkdir(parents=True, exist_ok=True)
    try:
        trio.run(_main, args, token)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
