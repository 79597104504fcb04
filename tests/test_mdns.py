"""mDNS discovery, in a network namespace with only loopback (never on a real network)."""

import os
import shutil
import sys
from pathlib import Path

import pytest
import trio

PROBE = Path(__file__).with_name("mdns_probe.py")
NAMESPACE_SETUP = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
                    reason="mDNS test needs root, unshare and ip to make a loopback-only network namespace")
async def test_two_nodes_find_each_other_by_mdns():
    with trio.fail_after(60):
        out = await trio.run_process(
            ["unshare", "--net", "sh", "-c", f'{NAMESPACE_SETUP} && exec "$0" "$1"', sys.executable, str(PROBE)],
            capture_stdout=True, capture_stderr=True, check=False)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    assert b"mdns: discovered and called" in out.stdout
    assert b"mDNS discovered" in out.stderr
