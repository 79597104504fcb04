"""Profile remote no-op calls (figures, not a test): two nodes in one process, one caller,
`--calls` sequential calls on /praxis/tool/1.1.0, under cProfile. Both sides' work is in the
one profile. Prints the median call time, the CPU time a call costs (both sides), and the top
functions (`--sort tottime` own time, `cumulative`); `--no-profile` for figures without the
profiler's overhead.

    .venv/bin/python scripts/profile_call.py --calls 2000 [--sort tottime] [--top 40]
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import statistics
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.cli.logs import configure_logging  # noqa: E402
from tests.helpers import py_tool, start_mesh, wait_all_know  # noqa: E402


async def main(args: argparse.Namespace) -> None:
    async with AsyncExitStack() as stack:
        caller, _ = await start_mesh(stack, [[], [py_tool("noop", "noop")]])
        await wait_all_know([caller], {"noop"})
        for _ in range(200):  # warm up: streams pooled, caches filled
            await caller.call("noop", {})
        profile = cProfile.Profile() if args.profile else None
        samples = []
        cpu = time.process_time()
        if profile is not None:
            profile.enable()
        for _ in range(args.calls):
            t0 = trio.current_time()
            await caller.call("noop", {})
            samples.append(trio.current_time() - t0)
        if profile is not None:
            profile.disable()
        cpu = time.process_time() - cpu
        # CPU time per call (both nodes run in this process) depends far less on other load than wall time.
        print(f"{args.calls} calls: median {statistics.median(samples) * 1000:.3f} ms, "
              f"mean {statistics.mean(samples) * 1000:.3f} ms, CPU {cpu / args.calls * 1000:.3f} ms a call",
              flush=True)
        if profile is not None:
            stats = pstats.Stats(profile)
            if args.dump:
                stats.dump_stats(args.dump)
            stats.sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--dump", default="")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    configure_logging("WARNING")
    logging.getLogger("praxis").setLevel(logging.ERROR)
    trio.run(main, parser.parse_args())
