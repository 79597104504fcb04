"""`praxis-node status` and `tools --describe` through `--node` and `--peer`, and `demo --keep`.

Against real node processes on 127.0.0.1, through the real CLI as a subprocess.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.request

import trio

from node.cli.remote import SOURCE_CARD, SOURCE_ENDPOINT, STATUS_FORMAT
from tests.processes import CLI, ROOT
from tests.test_remote import cli, cli_json, two_node_processes


def test_the_cli_knows_the_status_format_the_node_serves():
    from node.mesh.view import STATUS_FORMAT as served

    assert STATUS_FORMAT == served


async def test_status_and_describe_through_node_and_peer(tmp_path):
    async with two_node_processes(tmp_path) as (a, b):
        out = await cli("call", "--node", b["mcpUrl"], "echo", "text=hi")
        assert out.returncode == 0, out.stderr.decode()

        status = await cli_json("status", "--node", b["mcpUrl"])
        assert status["format"] == STATUS_FORMAT and status["source"] == SOURCE_ENDPOINT
        assert status["node"]["name"] == "node-b" and status["node"]["peerId"] == b["peerId"]
        assert status["node"]["uptimeSeconds"] > 0
        peer = next(p for p in status["peers"] if p["peerId"] == a["peerId"])
        assert peer["name"] == "node-a" and peer["direction"] == "outbound"
        assert peer["calls"]["sent"] == 1 and peer["latencyMs"] is not None
        echo = next(t for t in status["tools"] if t["name"] == "echo")
        assert echo["calls"] == 1 and echo["recent"]["calls"] == 1 and echo["recent"]["p50Ms"] is not None
        assert echo["providers"] == [{"kind": "peer", "name": "node-a", "peerId": a["peerId"]}]

        card = await cli_json("status", "--peer", b["addrs"][0])
        # One shape: the same keys at every level, nulls for what only the node knows.
        assert card.keys() == status.keys() and card["node"].keys() == status["node"].keys()
        assert card["source"] == SOURCE_CARD and card["node"]["uptimeSeconds"] is None
        assert card["node"]["name"] == "node-b" and card["node"]["addrs"] == b["addrs"]
        assert [p["peerId"] for p in card["peers"]] == [a["peerId"]]
        assert card["peers"][0].keys() == peer.keys() and card["peers"][0]["latencyMs"] is None
        assert [t["name"] for t in card["tools"]] == ["add", "echo"]
        card_echo = next(t for t in card["tools"] if t["name"] == "echo")
        assert card_echo.keys() == echo.keys() and card_echo["calls"] is None
        assert card_echo["providers"] == echo["providers"] and card_echo["parameters"] == echo["parameters"]

        for where, source in ((("--node", b["mcpUrl"]), SOURCE_ENDPOINT), (("--peer", b["addrs"][0]), SOURCE_CARD)):
            out = await cli("status", *where)
            assert out.returncode == 0, out.stderr.decode()[-2000:]
            text = out.stdout.decode()
            assert f"node     node-b  {b['peerId']}" in text and f"source   {source}" in text
            assert re.search(r"^node-a +" + a["peerId"], text, re.M), text
            assert re.search(r"^echo +node-a ", text, re.M), text

            described = await cli_json("tools", *where, "--describe", "echo")
            assert described == {
                "name": "echo", "description": "Echo a text",
                "parameters": [{"name": "text", "type": "string", "required": True,
                                "description": "what to echo"}],
                "providers": [{"name": "node-a", "peerId": a["peerId"], "callAs": "echo"}]}
            out = await cli("tools", *where, "--describe", "echo")
            assert re.search(r"^text +string +yes +what to echo$", out.stdout.decode(), re.M), out.stdout.decode()
            out = await cli("tools", *where, "--describe", "ehco")
            assert out.returncode == 1 and "did you mean 'echo'" in out.stderr.decode(), out.stderr.decode()


async def test_demo_keep_serves_the_page_until_interrupted(tmp_path):
    proc = await trio.lowlevel.open_process([*CLI, "demo", "--nodes", "2", "--keep"], cwd=ROOT,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        text = b""
        with trio.fail_after(60):
            while b"Ctrl-C stops the mesh" not in text:
                chunk = await proc.stdout.receive_some(4096)
                assert chunk, text.decode()
                text += chunk
        found = re.search(r"open (http://127\.0\.0\.1:\d+/) in a browser", text.decode())
        assert found, text.decode()

        def fetch() -> dict:
            with urllib.request.urlopen(found[1] + "status", timeout=10) as response:
                return json.loads(response.read())

        status = await trio.to_thread.run_sync(fetch)
        assert status["node"]["name"] == "node-0" and len(status["peers"]) >= 1
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
