"""The Dockerfile and compose file, parsed offline (no Docker engine runs here)."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

import core.settings

pytestmark = pytest.mark.unit

DOCKER = Path(__file__).resolve().parents[2] / "docker"
TARGETS = {"api", "dataflow", "batch", "ingest", "simulator"}
CODE_DIRS = ("core", "dataflows", "batch", "api")
AWS_NAMES = {
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
    "AWS_REGION", "AWS_ENDPOINT_URL",
}  # fmt: skip


@dataclass
class Stage:
    name: str
    parent: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(text: str) -> dict[str, Stage]:
    """Stages by name (unnamed ones by index), each with its (INSTRUCTION, arguments)."""
    joined = re.sub(r"\\\n", " ", text)
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            m = re.match(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.I)
            assert m, line
            current = Stage(name=m.group(2) or str(len(stages)), parent=m.group(1))
            stages[current.name] = current
        elif current is not None:
            current.instructions.append((instruction, " ".join(args.split())))
    return stages


def lineage(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, oldest first."""
    chain = [stages[name]]
    while chain[-1].parent in stages:
        chain.append(stages[chain[-1].parent])
    return chain[::-1]


def effective(stages: dict[str, Stage], name: str, instruction: str) -> str | None:
    """The last value of an instruction along the stage's lineage."""
    value = None
    for stage in lineage(stages, name):
        for ins, args in stage.instructions:
            if ins == instruction:
                value = args
    return value


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return parse_dockerfile((DOCKER / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return data


def settings_names() -> set[str]:
    names: set[str] = set()
    for _, cls in inspect.getmembers(core.settings, inspect.isclass):
        if issubclass(cls, BaseSettings) and cls is not BaseSettings:
            names |= {f.upper() for f in cls.model_fields}
    return names


def test_every_target_exists(stages: dict[str, Stage]) -> None:
    assert set(stages) >= TARGETS


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_targets_run_as_a_non_root_user(stages: dict[str, Stage], target: str) -> None:
    user = effective(stages, target, "USER")
    assert user is not None, f"{target} has no USER"
    assert user.split(":")[0] not in {"root", "0"}, f"{target} runs as {user}"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_targets_have_a_healthcheck(stages: dict[str, Stage], target: str) -> None:
    check = effective(stages, target, "HEALTHCHECK")
    assert check is not None, f"{target} has no HEALTHCHECK"
    assert check.upper() != "NONE"
    assert " CMD " in f" {check} "


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_targets_have_a_command(stages: dict[str, Stage], target: str) -> None:
    assert effective(stages, target, "CMD"), target


def test_locked_dependencies_are_installed_before_the_code(stages: dict[str, Stage]) -> None:
    steps = [ins for stage in lineage(stages, "api") for ins in stage.instructions]
    lock_copy = next(
        i for i, (ins, a) in enumerate(steps) if ins == "COPY" and "requirements.lock" in a
    )
    install = next(
        i
        for i, (ins, a) in enumerate(steps)
        if ins == "RUN" and "requirements.lock" in a and re.search(r"\b(uv|pip)\b", a)
    )
    code = min(
        i
        for i, (ins, a) in enumerate(steps)
        if ins == "COPY" and any(re.search(rf"(^|\s){d}(\s|/|$)", a) for d in CODE_DIRS)
    )
    assert lock_copy < install < code


def test_dockerfile_base_image_is_pinned_python(stages: dict[str, Stage]) -> None:
    bases = {n: s.parent for n, s in stages.items() if s.parent not in stages}
    # Python for everything that runs; Node only to fetch the chart page's library at build time.
    assert bases and all(b.startswith("python:") for n, b in bases.items() if n != "web"), bases
    assert bases.get("web", "node:").startswith("node:")


def test_compose_has_the_whole_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    want = {"localstack", "postgres", "redis", "simulator", "replay", "live", "api", "batch"}
    assert set(services) >= want
    commands = {name: " ".join(s.get("command", [])) for name, s in services.items()}
    assert commands["simulator"] == "python -m dataflows.simulator --host 0.0.0.0 --port 8010"
    assert commands["replay"] == "python -m bytewax.run dataflows.replay:flow"
    assert commands["live"] == "python -m bytewax.run dataflows.live:flow -r /recovery -s 5 -b 0"
    assert "live-recovery:/recovery" in services["live"]["volumes"]  # outlives the container
    assert commands["api"] == "python -m api --host 0.0.0.0 --port 8000"
    assert commands["batch"] == "python -m batch.pipeline"
    assert services["batch"].get("restart") == "no"


def test_compose_builds_existing_targets(compose: dict[str, Any], stages: dict[str, Stage]) -> None:
    built = {n: s["build"] for n, s in compose["services"].items() if "build" in s}
    assert built
    for name, build in built.items():
        assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
        assert build.get("target") in stages, f"{name} builds {build.get('target')!r}"


def test_compose_environment_matches_the_settings(compose: dict[str, Any]) -> None:
    known = settings_names() | AWS_NAMES
    assert {"LAKE_URL", "DATABASE_URL", "REDIS_URL", "KINESIS_STREAM", "API_KEYS"} <= known
    for name, service in compose["services"].items():
        if "build" not in service:
            continue  # third-party images have their own settings
        env = service.get("environment", {})
        names = set(env) if isinstance(env, dict) else {e.split("=", 1)[0] for e in env}
        unknown = names - known
        assert not unknown, f"{name}: {sorted(unknown)} are read by no settings class"
