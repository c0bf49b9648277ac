"""docker-compose.yml, checked without Docker: what each service starts exists in the project."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from cli.main import parser
from facesense.settings import setting_names

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
OURS = {name: svc for name, svc in SERVICES.items() if "build" in svc}


def test_the_production_services_are_all_there():
    assert {"redis", "minio", "minio-init", "api", "worker", "trainer", "flower"} <= set(SERVICES)
    assert "--appendonly" in SERVICES["redis"]["command"] and "healthcheck" in SERVICES["redis"]


@pytest.mark.parametrize("name", sorted(OURS))
def test_build_contexts_and_dockerfiles_exist(name):
    build = OURS[name]["build"]
    context = ROOT / build["context"]
    assert context.is_dir()
    dockerfile = context / build["dockerfile"]
    assert dockerfile.is_file()
    for src in re.findall(r"^COPY\s+(.+?)\s+\S+$", dockerfile.read_text(), re.M):
        for part in src.split():
            assert (context / part).exists(), f"{dockerfile.name} copies missing {part}"


@pytest.mark.parametrize("name", sorted(OURS))
def test_every_facesense_variable_is_a_real_setting(name):
    env = OURS[name].get("environment", {})
    names = [k for k in env if k.startswith("FACESENSE_")]
    assert names, f"{name} sets no FACESENSE_* variable"
    assert set(names) <= set(setting_names())


@pytest.mark.parametrize("name", sorted(OURS))
def test_every_command_starts_something_in_the_project(name):
    svc = OURS[name]
    command = svc.get("command")
    if command is None:  # the Dockerfile's CMD
        dockerfile = ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]
        cmd = re.search(r"^CMD\s+(\[.*\])$", dockerfile.read_text(), re.M).group(1)
        command = yaml.safe_load(cmd)
    program = command[0]
    if program == "facesense":
        parser().parse_args(command[1:])  # exits (fails the test) on an unknown sub-command
    elif program == "gunicorn":
        module, _, factory = command[-1].partition(":")
        app = __import__(module).__dict__[factory.removesuffix("()")]
        assert callable(app)
        assert shutil.which("gunicorn") or (ROOT / ".venv/bin/gunicorn").exists()
    else:
        pytest.fail(f"{name} starts {program!r}, which is not part of the project")


def test_gpu_workers_reserve_one_gpu_each_and_scale():
    for name in ("worker", "trainer"):
        devices = SERVICES[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
        assert "container_name" not in SERVICES[name]  # --scale needs generated names
