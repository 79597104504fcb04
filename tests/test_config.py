import os
import resource
import stat
import subprocess
import time

import pytest
import yaml

from node.config import ConfigError, load_config
from node.mesh.identity import load_or_create_identity, peer_id_of
from tests.processes import CLI, ROOT


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


PEER_A = "12D3KooWGzBe4hpqQ6G6C1tVMSPcp7vGPSrHHKMbEWTTMtTr7D3H"
PEER_B = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"


def test_env_overrides(tmp_path):
    path = write(tmp_path, "p2p: {port: 1}\n")
    config = load_config(path, env={
        "PRAXIS_P2P_PORT": "4002", "PRAXIS_P2P_ENABLE_MDNS": "false",
        "PRAXIS_P2P_BOOTSTRAP_NODES": f"/ip4/127.0.0.1/tcp/1/p2p/{PEER_A}, /ip4/127.0.0.1/tcp/2/p2p/{PEER_B}",
        "PRAXIS_AGENT_NAME": "from-env",
    })
    assert config.p2p.port == 4002 and config.p2p.enable_mdns is False
    assert config.p2p.bootstrap_nodes == [f"/ip4/127.0.0.1/tcp/1/p2p/{PEER_A}", f"/ip4/127.0.0.1/tcp/2/p2p/{PEER_B}"]
    assert config.agent.name == "from-env"


def test_a_bad_env_override_is_checked_like_the_file(tmp_path):
    path = write(tmp_path, "p2p: {port: 1}\n")
    with pytest.raises(ConfigError, match=r"p2p.bootstrap_nodes\[1\]: '/ip4/127.0.0.1/tcp/2/p2p/b' is not a multiaddr"):
        load_config(path, env={"PRAXIS_P2P_BOOTSTRAP_NODES":
                               f"/ip4/127.0.0.1/tcp/1/p2p/{PEER_A},/ip4/127.0.0.1/tcp/2/p2p/b"})


def test_bad_env_override_names_the_key(tmp_path):
    path = write(tmp_path, "{}\n")
    with pytest.raises(ConfigError, match="p2p.port"):
        load_config(path, env={"PRAXIS_P2P_PORT": "x"})


# -- environment overrides: a typo is an error, a bad value is blamed on its variable (issue 12) ------

def problems(err):
    return [(p.where, p.text) for p in err.value.problems]


def test_an_unknown_praxis_variable_is_refused_with_the_nearest_name(tmp_path):
    """Before, PRAXIS_P2P_PROT was ignored (while `p2p: {prot: 1}` in the file was refused)."""
    path = write(tmp_path, "p2p: {port: 1}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={"PRAXIS_P2P_PROT": "4002", "PRAXIS_MCP_TOKN": "s3cret", "PRAXIS_NOTHING_LIKE_IT": "1",
                               "HOME": "/root", "praxis_p2p_port": "9"})
    assert problems(err) == [
        ("PRAXIS_MCP_TOKN", "unknown variable, not a config override; did you mean PRAXIS_MCP_TOKEN?"),
        ("PRAXIS_NOTHING_LIKE_IT", "unknown variable, not a config override (those are PRAXIS_<SECTION>_<KEY>, "
                                   "such as PRAXIS_P2P_PORT); unset it or correct its name"),
        ("PRAXIS_P2P_PROT", "unknown variable, not a config override; did you mean PRAXIS_P2P_PORT?"),
    ]
    assert str(err.value).startswith(f"{path}: invalid configuration\n") and "s3cret" not in str(err.value)


def test_unknown_variables_are_reported_with_the_files_problems(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "p2p: {prot: 1}\n"), env={"PRAXIS_P2P_PROT": "1"})
    assert [where for where, _ in problems(err)] == ["PRAXIS_P2P_PROT", "p2p.prot"]


def test_a_bad_env_value_is_blamed_on_its_variable(tmp_path):
    """Before: `p2p.port: found 'abc'`, as if the file said so."""
    path = write(tmp_path, "p2p: {port: 1}\nlimits: {max_hops: 3}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={"PRAXIS_P2P_PORT": "abc", "PRAXIS_LIMITS_MAX_HOPS": "100",
                               "PRAXIS_ENGINES_PROCESS_ENABLED": "maybe", "PRAXIS_P2P_HOST": "my laptop"})
    assert problems(err) == [
        ("PRAXIS_P2P_PORT=abc", "expected an integer (the variable overrides p2p.port)"),
        ("PRAXIS_P2P_HOST='my laptop'", "found 'my laptop'; expected an IPv4 or IPv6 address to listen on, such as "
                                        "127.0.0.1 or 0.0.0.0 (not a name) (the variable overrides p2p.host)"),
        ("PRAXIS_ENGINES_PROCESS_ENABLED=maybe",
         "expected true or false (the variable overrides engines.process.enabled)"),
        ("PRAXIS_LIMITS_MAX_HOPS=100", "expected at most 64 (the variable overrides limits.max_hops)"),
    ]


def test_a_secret_from_the_environment_is_never_shown(tmp_path):
    from node.config import EnvOverride

    assert EnvOverride("PRAXIS_MCP_TOKEN", "s3cret", ("mcp", "token")).shown() == "PRAXIS_MCP_TOKEN=(hidden)"
    with pytest.raises(ConfigError) as err:  # an empty token, off loopback: the token rule, at the variable
        load_config(write(tmp_path, "mcp: {token: from-the-file}\n"),
                    env={"PRAXIS_MCP_HOST": "0.0.0.0", "PRAXIS_MCP_TOKEN": ""})
    [(where, text)] = problems(err)
    assert where == "PRAXIS_MCP_TOKEN=(hidden)" and "is not a loopback address" in text and "from-the-file" not in text
    # A structure (YAML) is never shown: it may carry headers or env.
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "{}\n"), env={"PRAXIS_MCP_SERVERS": "[{name: s, address: 'ftp://h/mcp', "
                                                                       "headers: {Authorization: Bearer s3cret}}]"})
    assert problems(err) == [("PRAXIS_MCP_SERVERS=(not shown)",
                              "mcp.servers[0]: server 's': address must be an http:// or https:// URL")]


def test_a_section_inside_a_section_is_overridden_too(tmp_path):
    """Before, PRAXIS_ENGINES_PROCESS_ENABLED did nothing: engines.process is a section of a section."""
    config = load_config(write(tmp_path, "{}\n"), env={"PRAXIS_ENGINES_PROCESS_ENABLED": "true",
                                                       "PRAXIS_ENGINES_DAGGER_MOUNT_ROOTS": "/a, /b"})
    assert config.engines.process.enabled is True and config.engines.dagger.mount_roots == ["/a", "/b"]


def test_every_key_has_one_variable():
    from node.config import NodeConfig, env_override_keys

    keys = env_override_keys()
    assert keys["PRAXIS_P2P_PORT"][0] == ("p2p", "port") and keys["PRAXIS_MCP_TOKEN"][0] == ("mcp", "token")
    sections = [(s, k) for s, f in NodeConfig.model_fields.items() for k in f.annotation.model_fields]
    assert {loc[:2] for loc, _ in keys.values()} == set(sections)
    assert len({loc for loc, _ in keys.values()}) == len(keys)


def test_variables_that_are_not_overrides_are_accepted(tmp_path):
    """The test suite's PRAXIS_TEST_* (passed to the nodes it starts) and what a dagger tool passes through."""
    path = write(tmp_path, yaml.safe_dump({"agent": {"tools": [
        {"name": "d", "engine": "dagger",
         "engineSpec": {"image": "busybox", "command": ["true"], "env_passthrough": ["PRAXIS_API_KEY"]}}]}}))
    config = load_config(path, env={"PRAXIS_TEST_DAGGER": "real", "PRAXIS_TEST_RECORD_FILE": "/tmp/x",
                                    "PRAXIS_API_KEY": "k", "PRAXIS_MCP_TOKEN": "t"})
    assert config.mcp.token == "t"


def test_overrides_do_not_change_the_callers_mapping():
    from node.config import parse_config

    data = {"p2p": {"port": 1}}
    assert parse_config(data, env={"PRAXIS_P2P_PORT": "2", "PRAXIS_MCP_PORT": "3"}).p2p.port == 2
    assert data == {"p2p": {"port": 1}}


def test_an_env_typo_stops_praxis_node_check(tmp_path):
    path = write(tmp_path, "p2p: {port: 0, enable_mdns: false}\nmcp: {enabled: false}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRAXIS_")}
    done = subprocess.run([*CLI, "check", "-c", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**env, "PRAXIS_P2P_PROT": "4001", "PRAXIS_MCP_PORT": "http"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"{path}: invalid configuration",
        "  PRAXIS_P2P_PROT: unknown variable, not a config override; did you mean PRAXIS_P2P_PORT?",
        "  PRAXIS_MCP_PORT=http: expected an integer (the variable overrides mcp.port)",
    ]
    done = subprocess.run([*CLI, "check", "-c", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**env, "PRAXIS_P2P_PORT": "4001", "PRAXIS_TEST_ANYTHING": "1"})
    assert done.returncode == 0, done.stderr


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


# -- arguments are data: what a process or dagger tool may declare (finding 4 of issue 8) ----------

def tool_config(tmp_path, engine, params=None, **extra):
    spec = {"process": {"command": ["true"]}, "dagger": {"image": "busybox:latest", "command": ["true"]},
            "python": {"callable": "tests.sample_tools:names"},
            "remote-mcp": {"address": "http://127.0.0.1:1/mcp"}}[engine]
    tool = {"name": "tool_x", "engine": engine, "params": params or [], "engineSpec": spec, **extra}
    return write(tmp_path, yaml.safe_dump({"agent": {"tools": [tool]}, "engines": {"process": {"enabled": True}}}))


DANGEROUS_PARAMS = [
    "SHELLOPTS", "PS4", "BASHOPTS", "BASH_ENV", "ENV", "PROMPT_COMMAND", "PAGER", "GIT_SSH_COMMAND",
    "GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0", "_JAVA_OPTIONS", "GCONV_PATH", "LD_PRELOAD", "PATH", "HOME",
    "PYTHONPATH", "CACHE_BUST", "Text",  # upper-case letters: never
    "http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy", "socks_proxy",  # proxies
    "path", "home", "shell", "ifs", "env", "bash_env", "cdpath", "fpath", "cache_bust",  # special to shells
    "a-b", "1x", "_x", "x" * 65, "é",
]


@pytest.mark.parametrize("engine", ["process", "dagger"])
@pytest.mark.parametrize("name", DANGEROUS_PARAMS)
def test_dangerous_parameter_names_are_refused_at_load(tmp_path, engine, name):
    path = tool_config(tmp_path, engine, [{"name": name}])
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    text = str(err.value)
    assert str(path) in text and "agent.tools[0].params" in text and "'tool_x'" in text
    assert repr(name[:64]) in text and "lower-case letters, digits and _" in text


def test_a_path_parameter_is_refused_at_load_not_on_every_call(tmp_path):
    """Before, `path` loaded and then every call was refused (it upper-cased to PATH)."""
    with pytest.raises(ConfigError, match=r"parameter 'path' is reserved"):
        load_config(tool_config(tmp_path, "process", [{"name": "path", "required": True}]), env={})


@pytest.mark.parametrize("engine", ["process", "dagger"])
def test_ordinary_lower_case_parameters_load(tmp_path, engine):
    names = ["text", "count", "file_name", "a1", "proxy_mode", "x" * 64]
    config = load_config(tool_config(tmp_path, engine, [{"name": n} for n in names]), env={})
    assert [p.name for p in config.agent.tools[0].params] == names


@pytest.mark.parametrize("engine", ["python", "remote-mcp"])
def test_python_and_remote_mcp_parameters_are_not_environment_names(tmp_path, engine):
    config = load_config(tool_config(tmp_path, engine, [{"name": "Text"}, {"name": "PATH"}]), env={})
    assert [p.name for p in config.agent.tools[0].params] == ["Text", "PATH"]


@pytest.mark.parametrize("engine", ["process", "dagger"])
def test_accept_undeclared_arguments_is_refused_for_env_engines(tmp_path, engine):
    with pytest.raises(ConfigError) as err:
        load_config(tool_config(tmp_path, engine, accept_undeclared_arguments=True), env={})
    text = str(err.value)
    assert "agent.tools[0].accept_undeclared_arguments" in text and "'tool_x'" in text
    assert f"not allowed for {engine} tools" in text


@pytest.mark.parametrize("engine", ["python", "remote-mcp"])
def test_accept_undeclared_arguments_is_explicit_for_other_engines(tmp_path, engine):
    assert load_config(tool_config(tmp_path, engine), env={}).agent.tools[0].accept_undeclared_arguments is False
    opened = load_config(tool_config(tmp_path, engine, accept_undeclared_arguments=True), env={})
    assert opened.agent.tools[0].accept_undeclared_arguments is True


def test_parameters_the_contract_would_shadow_are_refused(tmp_path):
    path = tool_config(tmp_path, "process", [{"name": "text"}])
    data = yaml.safe_load(path.read_text())
    data["agent"]["tools"][0]["engineSpec"]["env"] = {"text": "fixed"}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"parameter\(s\) \['text'\] are also set by engineSpec.env"):
        load_config(path, env={})
    data["agent"]["tools"][0] = {"name": "d", "engine": "dagger", "params": [{"name": "token"}],
                                 "engineSpec": {"image": "busybox", "command": ["true"], "env_passthrough": ["token"]}}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"\['token'\] are also set by engineSpec.env or env_passthrough"):
        load_config(path, env={})


def test_duplicate_parameters_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"parameter\(s\) \['text'\] are declared more than once"):
        load_config(tool_config(tmp_path, "python", [{"name": "text"}, {"name": "text"}]), env={})


def test_demo_config_still_loads(tmp_path):
    from node.cli.demo import DAGGER_TOOL, TOOLS, DemoNode, _config
    from node.config import parse_config

    node = DemoNode(0, "demo-0", tmp_path, [*TOOLS, DAGGER_TOOL])
    config = parse_config(_config(node, []), env={})
    assert {t.name for t in config.agent.tools} == {t["name"] for t in node.tools}


# -- config errors never echo what may be a secret --------------------------------------------------

@pytest.mark.parametrize("text", [
    'mcp: "token=s3cret"\n',
    "mcp: {servers: 'Authorization: Bearer s3cret'}\n",
    "mcp: {servers: ['s3cret']}\n",
    "p2p: {bootstrap_nodes: 's3cret'}\n",
    "agent: 's3cret'\n",
    "mcp: {token: [s3cret]}\n",
    "mcp: {servers: [{name: s, env: {A: [s3cret]}}]}\n",
])
def test_config_errors_never_echo_a_misplaced_value(tmp_path, text):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env={})
    message = str(err.value)
    assert "s3cret" not in message
    assert "found a string" in message or "(hidden)" in message or "found a list" in message


def test_config_errors_still_show_ordinary_scalars(tmp_path):
    with pytest.raises(ConfigError, match=r"p2p.port: found 'abc'"):
        load_config(write(tmp_path, "p2p: {port: abc}\n"), env={})


# -- the key file is a small regular file, never a device or a folder -----------------------------

def test_key_file_that_is_a_folder_or_too_large_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"p2p.key_file: .* is not a regular file \(it is a folder\)"):
        load_or_create_identity(tmp_path)
    big = tmp_path / "big.key"
    big.write_bytes(b"\0" * 100_000)
    with pytest.raises(ConfigError, match=r"p2p.key_file: .*big.key is 100000 bytes, too large"):
        load_or_create_identity(big)


@pytest.mark.parametrize("key_file", ["/dev/zero", "fifo"])
def test_key_file_device_or_fifo_fails_fast_in_praxis_node_id(tmp_path, key_file):
    """`praxis-node id` used to read /dev/zero until memory ran out, and wait on a FIFO forever."""
    if key_file == "fifo":
        os.mkfifo(tmp_path / "fifo")
    config = write(tmp_path, yaml.safe_dump({"p2p": {"key_file": key_file}}))

    def bounded_memory() -> None:  # if the key were read unbounded, fail fast instead of eating RAM
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    started = time.monotonic()
    done = subprocess.run([*CLI, "id", "-c", str(config)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, preexec_fn=bounded_memory)
    assert time.monotonic() - started < 30
    assert done.returncode == 2, done.stderr[-2000:]
    assert "p2p.key_file" in done.stderr and "is not a regular file" in done.stderr
