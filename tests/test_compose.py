"""docker-compose.yml, checked without Docker: what each service starts exists in the project."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from cli.main import parser
from facesense.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
OURS = {name: svc for name, svc in SERVICES.items() if "build" in svc}


def test_the_production_services_are_all_there():
    assert {"redis", "minio", "minio-init", "api", "worker", "trainer", "flower"} <= set(SERVICES)
    assert "--appendonly" in _command_text(SERVICES["redis"]) and "healthcheck" in SERVICES["redis"]


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
    assert set(names) <= set(Settings().env())


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


def _command_text(svc: dict) -> str:
    """A service's command (list or string) as one string."""
    command = svc.get("command") or []
    return command if isinstance(command, str) else " ".join(map(str, command))


ONE_SHOTS = {name for svc in SERVICES.values() for name, dep in (svc.get("depends_on") or {}).items()
             if dep.get("condition") == "service_completed_successfully"}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_long_running_service_has_a_health_check(name):
    if name in ONE_SHOTS:  # others wait for its exit code instead
        assert "healthcheck" not in SERVICES[name]
        return
    check = SERVICES[name].get("healthcheck")
    assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"


def test_the_health_checks_ask_what_each_service_serves():
    probes = {name: " ".join(svc["healthcheck"]["test"]) for name, svc in SERVICES.items()
              if "healthcheck" in svc}
    assert "/healthz" in probes["api"]  # Redis and the store answer
    assert "/healthcheck" in probes["flower"]
    for name in ("worker", "trainer"):  # served once the pool is up: alive even mid-task
        port = SERVICES[name]["environment"]["FACESENSE_WORKER_METRICS_PORT"]
        assert f":{port}/metrics" in probes[name]
    assert "REDISCLI_AUTH" in probes["redis"]  # a ping without the password is refused


def _dockerfile_user(svc: dict) -> str | None:
    """The last USER of a built service's Dockerfile."""
    text = (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    return users[-1] if users else None


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_process_runs_as_a_non_root_user(name):
    svc = SERVICES[name]
    user = str(svc.get("user") or (_dockerfile_user(svc) if "build" in svc else ""))
    assert user, f"{name} names no user: it would run as the image's, often root"
    assert user.split(":")[0] not in ("0", "root"), f"{name} runs as root"


def test_redis_asks_for_a_password_from_the_env_file_and_every_client_sends_it():
    redis = SERVICES["redis"]
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    command = _command_text(redis)
    assert "requirepass" in command and "--appendonly yes" in command
    assert "$$REDIS_PASSWORD" in command  # expanded in the container, from a file, not argv
    urls = [svc["environment"]["FACESENSE_REDIS_URL"] for svc in OURS.values()]
    urls.append(SERVICES["flower"]["environment"]["CELERY_BROKER_URL"])
    assert all(u.startswith("redis://:${REDIS_PASSWORD:?") for u in urls), urls
    assert "broker" not in _command_text(SERVICES["flower"])  # nor in Flower's command line


def test_flower_asks_for_basic_auth_from_the_env_file():
    assert SERVICES["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")


def test_the_env_example_names_every_variable_compose_requires():
    text = (ROOT / "docker-compose.yml").read_text() + (ROOT / "docker-compose.sentinel.yml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    example = (ROOT / "deploy/compose.env.example").read_text()
    assert required == {"REDIS_PASSWORD", "MINIO_ROOT_PASSWORD", "FLOWER_BASIC_AUTH"}
    assert all(re.search(rf"^{name}=", example, re.M) for name in required)
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def _images() -> list[str]:
    """Every image the deployment pulls: compose's image: and the Dockerfiles' FROM."""
    sentinel = yaml.safe_load((ROOT / "docker-compose.sentinel.yml").read_text())["services"]
    images = [svc["image"] for svc in [*SERVICES.values(), *sentinel.values()] if "image" in svc]
    for dockerfile in (ROOT / "docker").glob("*.Dockerfile"):
        images += re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), re.M)
    return images


@pytest.mark.parametrize("image", sorted(set(_images())))
def test_every_image_is_pinned_by_a_version_tag_and_any_digest_is_whole(image):
    name, _, digest = image.partition("@")
    repo, _, tag = name.rpartition(":")
    assert repo and "/" not in tag, f"{image} has no tag"
    assert tag != "latest" and re.search(r"\d+\.\d+|\d{4}-\d\d-\d\d", tag), f"{image}: a moving tag"
    assert not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest), image
