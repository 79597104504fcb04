"""DaggerEngine against real containers: results, env, secrets, mounts, contract and exec errors."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from node.tools.engines.dagger import DaggerEngine
from protocols.errors import ContractError, InvalidArguments, ToolExecutionError
from tests.dagger_fixtures import DaggerBackend, dagger_contract, make_engine

SECRET = "s3cret-passthrough-value-91f2"


def deadline(seconds: float = 60.0) -> float:
    return trio.current_time() + seconds


async def test_stdout_is_the_result(engine: DaggerEngine) -> None:
    result = await engine.execute(dagger_contract(command=["echo", "hello"]), {}, deadline())
    assert result.text_output() == "hello\n"
    assert not result.is_error
    assert result.structured_content is None


async def test_json_stdout_is_also_structured(engine: DaggerEngine) -> None:
    obj = dagger_contract(command=["sh", "-c", 'echo \'{"words": 3, "ok": true}\''])
    result = await engine.execute(obj, {}, deadline())
    assert result.structured_content == {"words": 3, "ok": True}
    arr = dagger_contract(command=["sh", "-c", "echo '[1, 2]'"])
    assert (await engine.execute(arr, {}, deadline())).structured_content == {"result": [1, 2]}


async def test_arguments_become_env(engine: DaggerEngine) -> None:
    params = [{"name": "text"}, {"name": "count", "type": "number"}, {"name": "opts", "type": "object"}]
    contract = dagger_contract(params=params, command=["sh", "-c", 'printf "%s|%s|%s" "$text" "$count" "$opts"'])
    args = {"text": "two words\nand 'quotes' \"here\"", "count": 3, "opts": {"a": [1]}}
    result = await engine.execute(contract, args, deadline())
    assert result.text_output() == 'two words\nand \'quotes\' "here"|3|{"a":[1]}'


async def test_fixed_env(engine: DaggerEngine) -> None:
    contract = dagger_contract(command=["sh", "-c", 'echo "$LANG/$GREETING"'], env={"LANG": "C", "GREETING": "hi"})
    assert (await engine.execute(contract, {}, deadline())).text_output() == "C/hi\n"


async def test_passthrough_set_and_unset_never_leaks(
    dagger_backend: DaggerBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    eng = make_engine(dagger_backend, tmp_path, extra_env={"API_TOKEN": SECRET})
    try:
        check = dagger_contract(
            command=["sh", "-c", f'test "$API_TOKEN" = "{SECRET}" && echo set; echo "${{NOT_SET_HERE-absent}}"'],
            env_passthrough=["API_TOKEN", "NOT_SET_HERE"],
        )
        assert (await eng.execute(check, {}, deadline())).text_output() == "set\nabsent\n"
        echo = dagger_contract(params=[{"name": "note"}], command=["sh", "-c", "echo token=$API_TOKEN"],
                               env_passthrough=["API_TOKEN"])
        result = await eng.execute(echo, {"note": "argument-value-7c1"}, deadline())
        assert SECRET not in result.model_dump_json()
        assert result.text_output() == "token=***\n"
        fail = dagger_contract(command=["sh", "-c", "echo $API_TOKEN >&2; exit 2"], env_passthrough=["API_TOKEN"])
        with pytest.raises(ToolExecutionError) as info:
            await eng.execute(fail, {}, deadline())
        assert SECRET not in str(info.value) and SECRET not in info.value.stderr
    finally:
        await eng.aclose()
    assert SECRET not in caplog.text
    assert "argument-value-7c1" not in caplog.text


async def test_mounted_dir_is_read_and_written_back(dagger_backend: DaggerBackend, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "in.txt").write_text("hello from the host\n")
    (data / "keep.txt").write_text("untouched\n")
    eng = make_engine(dagger_backend, tmp_path)
    try:
        contract = dagger_contract(
            command=["sh", "-c", "cat /data/in.txt; echo written > /data/out.txt; echo deep > /data/sub/new.txt"],
            mounts={"./data": "/data"},
        )
        result = await eng.execute(contract, {}, deadline())
    finally:
        await eng.aclose()
    assert result.text_output() == "hello from the host\n"
    assert (data / "out.txt").read_text() == "written\n"
    assert (data / "sub" / "new.txt").read_text() == "deep\n"
    assert (data / "keep.txt").read_text() == "untouched\n"


async def test_failed_run_exports_nothing(dagger_backend: DaggerBackend, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    eng = make_engine(dagger_backend, tmp_path)
    try:
        contract = dagger_contract(command=["sh", "-c", "echo x > /data/out.txt; exit 1"], mounts={"data": "/data"})
        with pytest.raises(ToolExecutionError):
            await eng.execute(contract, {}, deadline())
    finally:
        await eng.aclose()
    assert not (tmp_path / "data" / "out.txt").exists()


async def test_missing_mount_path(engine: DaggerEngine) -> None:
    contract = dagger_contract(command=["true"], mounts={"./nowhere": "/data"})
    engine.check_contract(contract)  # may be created later: not an error at start
    with pytest.raises(ContractError, match="'./nowhere' does not exist"):
        await engine.execute(contract, {}, deadline())


@pytest.mark.parametrize("source", ["/etc", "../outside", "link-out", "inside/../../outside"])
async def test_mount_escaping_the_roots_is_refused(dagger_backend: DaggerBackend, tmp_path: Path, source: str) -> None:
    base = tmp_path / "base"
    (base / "inside").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (base / "link-out").symlink_to(tmp_path / "outside")
    eng = make_engine(dagger_backend, base)
    contract = dagger_contract(command=["true"], mounts={source: "/data"})
    try:
        with pytest.raises(ContractError, match="outside the allowed mount roots"):
            eng.check_contract(contract)
        with pytest.raises(ContractError, match="outside the allowed mount roots"):
            await eng.execute(contract, {}, deadline())
    finally:
        await eng.aclose()


async def test_symlink_inside_roots_and_extra_roots_are_allowed(dagger_backend: DaggerBackend, tmp_path: Path) -> None:
    base, shared = tmp_path / "base", tmp_path / "shared"
    (base / "real").mkdir(parents=True)
    shared.mkdir()
    (base / "real" / "f.txt").write_text("via link\n")
    (shared / "g.txt").write_text("shared root\n")
    (base / "alias").symlink_to(base / "real")
    eng = make_engine(dagger_backend, base, mount_roots=[".", str(shared)])
    try:
        contract = dagger_contract(
            command=["sh", "-c", "cat /a/f.txt /s/g.txt"], mounts={"alias": "/a", str(shared): "/s"}
        )
        result = await eng.execute(contract, {}, deadline())
    finally:
        await eng.aclose()
    assert result.text_output() == "via link\nshared root\n"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"command": "echo hi"}, "engineSpec.command"),
        ({"command": ["echo", 1]}, "engineSpec.command"),
        ({"command": []}, "engineSpec.command"),
        ({"command": ["true"], "image": ""}, "engineSpec.image"),
        ({"command": ["true"], "image": None}, "engineSpec.image"),
        ({"command": ["true"], "env": {"BAD-NAME": "x"}}, "not a valid variable name"),
        ({"command": ["true"], "timeout": "soon"}, "engineSpec.timeout"),
        ({"command": ["true"], "mounts": {"data": "relative"}}, "must be an absolute path"),
    ],
)
async def test_bad_contracts_fail_before_anything_runs(
    dagger_backend: DaggerBackend, engine: DaggerEngine, spec: dict[str, Any], field: str
) -> None:
    before = dagger_backend.stats()
    contract = dagger_contract(**spec)
    with pytest.raises(ContractError, match=field):
        engine.check_contract(contract)
    with pytest.raises(ContractError, match=field):
        await engine.execute(contract, {}, deadline())
    assert dagger_backend.stats() == before


async def test_missing_image_field(engine: DaggerEngine) -> None:
    from node.config import ToolContract

    contract = ToolContract.model_validate({"name": "t", "engine": "dagger", "engineSpec": {"command": ["true"]}})
    with pytest.raises(ContractError, match="engineSpec.image is missing"):
        engine.check_contract(contract)
    with pytest.raises(ContractError, match="engineSpec.image is missing"):
        await engine.execute(contract, {}, deadline())


async def test_nonzero_exit_with_stderr(engine: DaggerEngine) -> None:
    contract = dagger_contract(command=["sh", "-c", "echo partial; echo 'it broke' >&2; exit 3"])
    with pytest.raises(ToolExecutionError) as info:
        await engine.execute(contract, {}, deadline())
    assert info.value.exit_code == 3
    assert info.value.stderr == "it broke"
    assert "exited with code 3: it broke" in str(info.value)


async def test_nonzero_exit_without_stderr(engine: DaggerEngine) -> None:
    with pytest.raises(ToolExecutionError) as info:
        await engine.execute(dagger_contract(command=["sh", "-c", "exit 4"]), {}, deadline())
    assert info.value.exit_code == 4
    assert info.value.stderr == ""
    assert "exited with code 4: no error output" in str(info.value)


async def test_image_that_does_not_exist(engine: DaggerEngine) -> None:
    image = "praxis-test/no-such-image-4f1e:never"
    with trio.fail_after(60):
        with pytest.raises(ToolExecutionError) as info:
            await engine.execute(dagger_contract(command=["true"], image=image), {}, deadline())
    assert f"the image {image!r} cannot be pulled" in str(info.value)
    assert info.value.exit_code is None


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"PATH": "/tmp"}, "PATH"),
        ({"HOME": "/tmp"}, "HOME"),
        ({"LD_PRELOAD": "/x.so"}, "LD_PRELOAD"),
        ({"PYTHONPATH": "/x"}, "PYTHONPATH"),
        ({"CACHE_BUST": "1"}, "CACHE_BUST"),
        ({"GREETING": "x"}, "GREETING"),  # set by the contract's env
        ({"API_TOKEN": "x"}, "API_TOKEN"),  # a passthrough name
        ({"not-an-identifier": "x"}, "not-an-identifier"),
    ],
)
async def test_protected_env_names(
    dagger_backend: DaggerBackend, engine: DaggerEngine, arguments: dict[str, str], name: str
) -> None:
    before = dagger_backend.stats()
    contract = dagger_contract(command=["env"], env={"GREETING": "hi"}, env_passthrough=["API_TOKEN"])
    with pytest.raises(InvalidArguments, match=name) as info:
        await engine.execute(contract, arguments, deadline())
    assert arguments[name] not in str(info.value)
    assert dagger_backend.stats() == before


def test_no_forbidden_imports() -> None:
    source = (Path(__file__).resolve().parents[2] / "node" / "tools" / "engines" / "dagger.py").read_text()
    for forbidden in ("node.mesh.host", "node.mesh.directory", "node.mesh.router", "node.mcp.endpoint"):
        assert forbidden not in source
    assert os.path.getsize(Path(__file__).resolve().parents[2] / "node" / "tools" / "engines" / "dagger.py") < 20_000
