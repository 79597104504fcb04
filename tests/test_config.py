import os
import stat

import pytest

from node.config import ConfigError, load_config
from node.identity import load_or_create_identity, peer_id_of


def write(tmp_path, text):
    path = tmp_path / "node.yaml"
    path.write_text(text)
    return path


def test_go_shaped_config_loads(tmp_path):
    path = write(tmp_path, """
agent:
  name: node-a
  tools:
    - name: word_count
      description: Count words
      engine: dagger
      params:
        - {name: text, type: string, description: the text, required: true}
      engineSpec:
        image: busybox:latest
        command: ["sh", "-c", "echo $text | wc -w"]
p2p: {port: 4001, bootstrap_nodes: [], enable_mdns: true}
""")
    config = load_config(path, env={})
    tool = config.agent.tools[0]
    assert tool.engine == "dagger" and tool.engine_spec["image"] == "busybox:latest"
    assert tool.input_schema()["required"] == ["text"]
    assert config.p2p.port == 4001 and config.base_dir == tmp_path.resolve()


def test_bad_value_names_file_key_found_and_expected(tmp_path):
    path = write(tmp_path, "p2p: {port: seventy}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    text = str(err.value)
    assert str(path) in text and "p2p.port" in text and "'seventy'" in text and "integer" in text


def test_unknown_engine_and_missing_name_are_reported_together(tmp_path):
    path = write(tmp_path, "agent:\n  tools:\n    - {name: t, engine: docker}\n    - {engine: python}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    text = str(err.value)
    assert "agent.tools[0].engine" in text and "'docker'" in text
    assert "agent.tools[1].name: missing" in text


def test_typo_key_is_refused(tmp_path):
    path = write(tmp_path, "p2p: {prot: 1}\n")
    with pytest.raises(ConfigError, match=r"p2p.prot: unknown key"):
        load_config(path, env={})


def test_yaml_syntax_error_says_where(tmp_path):
    path = write(tmp_path, "agent: [\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line"):
        load_config(path, env={})


def test_duplicate_tool_names_are_refused(tmp_path):
    tool = "{name: t, engine: python, engineSpec: {callable: 'a:b'}}"
    path = write(tmp_path, f"agent:\n  tools: [{tool}, {tool}]\n")
    with pytest.raises(ConfigError, match="more than once"):
        load_config(path, env={})


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml", env={})


def test_env_overrides(tmp_path):
    path = write(tmp_path, "p2p: {port: 1}\n")
    config = load_config(path, env={
        "PRAXIS_P2P_PORT": "4002", "PRAXIS_P2P_ENABLE_MDNS": "false",
        "PRAXIS_P2P_BOOTSTRAP_NODES": "/ip4/127.0.0.1/tcp/1/p2p/a, /ip4/127.0.0.1/tcp/2/p2p/b",
        "PRAXIS_AGENT_NAME": "from-env",
    })
    assert config.p2p.port == 4002 and config.p2p.enable_mdns is False
    assert config.p2p.bootstrap_nodes == ["/ip4/127.0.0.1/tcp/1/p2p/a", "/ip4/127.0.0.1/tcp/2/p2p/b"]
    assert config.agent.name == "from-env"


def test_bad_env_override_names_the_key(tmp_path):
    path = write(tmp_path, "{}\n")
    with pytest.raises(ConfigError, match="p2p.port"):
        load_config(path, env={"PRAXIS_P2P_PORT": "x"})


def test_secret_values_are_hidden_in_errors(tmp_path):
    path = write(tmp_path, "mcp: {servers: [{name: s, headers: {Authorization: [not-a-string-SECRET]}}]}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert "SECRET" not in str(err.value) and "headers" in str(err.value)


def test_identity_is_created_0600_and_stable(tmp_path):
    key_path = tmp_path / "id.key"
    first = peer_id_of(load_or_create_identity(key_path))
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert peer_id_of(load_or_create_identity(key_path)) == first
    assert first.to_string().startswith("12D3KooW")


def test_corrupt_identity_is_an_error_not_replaced(tmp_path):
    key_path = tmp_path / "id.key"
    key_path.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_or_create_identity(key_path)
    assert key_path.read_bytes() == b"garbage"
