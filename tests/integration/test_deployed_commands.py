"""Every command a deployment names resolves: Terraform (modules and roots), the Dockerfile and
compose. A job that names a module which does not exist fails only in AWS, every day, so each
``python -m X`` is run with ``--help`` here, and each ``bytewax.run M:flow`` is built.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
_HCL_LIST = re.compile(r"\[([^\[\]]*\"python\"[^\[\]]*)\]")
_HCL_STRING = re.compile(r"\"((?:[^\"\\]|\\.)*)\"")
_SH_PYTHON = re.compile(r"\bpython\s+(-m\s+\S+(?:\s+[^\s$;&|]+)*)")


def _python_args(words: list[str]) -> list[str] | None:
    """The arguments after ``python`` when ``words`` runs ``python -m``, else None."""
    if "python" not in words:
        return None
    args = words[words.index("python") + 1 :]
    return args if args[:1] == ["-m"] else None


def _from_shell(words: list[str]) -> list[list[str]]:
    """``sh -c "... python -m X ..."`` holds commands of its own."""
    if words[:2] not in (["sh", "-c"], ["/bin/sh", "-c"]) or len(words) < 3:
        return []
    return [m.group(1).split() for m in _SH_PYTHON.finditer(words[2])]


def terraform_commands() -> dict[str, list[str]]:
    """``python -m`` lists in every .tf file, by file and line."""
    found: dict[str, list[str]] = {}
    for tf in sorted((ROOT / "terraform").rglob("*.tf")):
        if ".terraform" in tf.parts:
            continue
        text = tf.read_text()
        for m in _HCL_LIST.finditer(text):
            words = [json.loads(f'"{s}"') for s in _HCL_STRING.findall(m.group(1))]
            line = text.count("\n", 0, m.start()) + 1
            where = f"{tf.relative_to(ROOT)}:{line}"
            for i, cmd in enumerate([_python_args(words), *_from_shell(words)]):
                if cmd:
                    found[f"{where}#{i}"] = cmd
    return found


def dockerfile_commands() -> dict[str, list[str]]:
    """CMD and ENTRYPOINT of every stage (exec form)."""
    found: dict[str, list[str]] = {}
    text = re.sub(r"\\\n", " ", (ROOT / "docker" / "Dockerfile").read_text())
    stage = "?"
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word.upper() == "FROM":
            stage = rest.split()[-1]
        elif word.upper() in ("CMD", "ENTRYPOINT") and rest.strip().startswith("["):
            words = json.loads(rest)
            for i, cmd in enumerate([_python_args(words), *_from_shell(words)]):
                if cmd:
                    found[f"Dockerfile:{stage}:{word}#{i}"] = cmd
    return found


def compose_commands() -> dict[str, list[str]]:
    """``command`` and ``entrypoint`` of every service."""
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    found: dict[str, list[str]] = {}
    for name, svc in doc["services"].items():
        for field in ("command", "entrypoint"):
            words = svc.get(field)
            if isinstance(words, str):
                words = words.split()
            if not words:
                continue
            for i, cmd in enumerate([_python_args(words), *_from_shell(words)]):
                if cmd:
                    found[f"compose:{name}:{field}#{i}"] = cmd
    return found


def all_commands() -> dict[str, list[str]]:
    return {**terraform_commands(), **dockerfile_commands(), **compose_commands()}


def modules_with_help() -> dict[str, str]:
    """Each module run as ``python -m X`` (but bytewax.run), with where it is named first."""
    out: dict[str, str] = {}
    for where, cmd in all_commands().items():
        if cmd[1] != "bytewax.run":
            out.setdefault(cmd[1], where)
    return out


def flow_targets() -> dict[str, str]:
    """Each ``M:attr`` given to ``bytewax.run``, with where it is named first."""
    out: dict[str, str] = {}
    for where, cmd in all_commands().items():
        if cmd[1] == "bytewax.run":
            out.setdefault(cmd[2], where)
    return out


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No service URL from the caller: ``--help`` must need none, and start none."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_URL") and k != "APP_ENV"}
    env.pop("KINESIS_STREAM", None)
    return {**env, "DATA_DIR": str(tmp_path / "data"), "LAKE_URL": str(tmp_path / "lake"), **extra}


def test_the_deployment_files_name_commands() -> None:
    commands = all_commands()
    assert any(w.startswith("terraform/modules/") for w in commands), commands
    assert any(w.startswith("terraform/environments/") for w in commands), commands
    assert any(w.startswith("Dockerfile:") for w in commands), commands
    assert any(w.startswith("compose:") for w in commands), commands
    assert "dataflows.metadata" in modules_with_help()
    assert {"dataflows.live:flow", "dataflows.replay:flow"} <= set(flow_targets())


@pytest.mark.parametrize("module", sorted(modules_with_help()))
def test_every_python_m_answers_help(module: str, tmp_path: Path) -> None:
    where = modules_with_help()[module]
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,  # not the checkout: the installed package must resolve it
    )
    assert proc.returncode == 0, f"{where}: python -m {module} --help\n{proc.stderr[-2000:]}"
    assert "usage" in proc.stdout.lower(), f"{where}: no usage text\n{proc.stdout[-500:]}"


@pytest.mark.parametrize("target", sorted(flow_targets()))
def test_every_bytewax_target_offers_its_flow(
    target: str, tmp_path: Path, pg_url: str, redis_server_url: str
) -> None:
    """The module imports without side effects, and the attribute builds a Dataflow."""
    where = flow_targets()[target]
    module, _, attr = target.partition(":")
    script = (
        "import importlib, sys\n"
        "from bytewax.dataflow import Dataflow\n"
        f"m = importlib.import_module({module!r})\n"
        f"flow = getattr(m, {attr or 'flow'!r})\n"
        "sys.exit(0 if isinstance(flow, Dataflow) else 3)\n"
    )
    env = clean_env(
        tmp_path,
        DATABASE_URL=pg_url,
        REDIS_URL=redis_server_url,
        REPLAY_START="2025-01-02",
        REPLAY_END="2025-01-03",
        POLYGON_WS_URL="127.0.0.1:9",  # built, never connected
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, f"{where}: {target} is no Dataflow\n{proc.stderr[-2000:]}"
