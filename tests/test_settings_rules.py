"""Settings that say what is wrong: type, range and allowed values checked as they are read, one
line naming the variable, the value and what is allowed; `facesense config` shows what is in
effect and where it came from."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from facesense import settings_rules
from facesense.errors import ConfigError
from facesense.settings import Settings


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("FACESENSE_SHARD_SIZE", "abc", "'abc' is not a whole number (allowed: a whole number >= 1)"),
    ("FACESENSE_SHARD_SIZE", "-5", "'-5' is out of range (allowed: a whole number >= 1)"),
    ("FACESENSE_DEVICE", "gpu", "'gpu' is not a known value (allowed: one of auto, cpu, cuda, cuda:N)"),
    ("FACESENSE_PRECISION", "fp8", "one of auto, fp32, bf16, bf16-full, fp16, int8"),
    ("FACESENSE_FACE_MARGIN", "nan", "'nan' is out of range (allowed: a number from 0 to 1)"),
    ("FACESENSE_FACE_THRESHOLD", "1.5", "(allowed: a number from 0 to 1)"),
    ("FACESENSE_API_PORT", "70000", "(allowed: a whole number from 1 to 65535)"),
    ("FACESENSE_THUMBNAILS", "yes", "'yes' is not a known value (allowed: one of 0, 1)"),
    ("FACESENSE_LOG_FORMAT", "xml", "one of text, json"),
    ("FACESENSE_STORE", "gs://bucket", "a folder, file://PATH or s3://BUCKET[/PREFIX]"),
    ("FACESENSE_API_URL", "localhost:8000", "an http:// or https:// URL (or empty)"),
    ("FACESENSE_MAX_UPLOAD_BYTES", "0", "(allowed: a whole number >= 1)"),
    ("FACESENSE_VISIBILITY_TIMEOUT", "1.5", "is not a whole number"),
])
def test_a_bad_setting_is_one_line_naming_variable_value_and_what_is_allowed(variable, value, says):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({variable: value})
    message = str(info.value)
    assert message.startswith(f"{variable}=") and says in message, message
    assert "\n" not in message


@pytest.mark.parametrize(("variable", "value"), [
    ("FACESENSE_DEVICE", "cuda:1"), ("FACESENSE_LOG_LEVEL", "debug"), ("FACESENSE_SHARD_SIZE", "1_024"),
    ("FACESENSE_STORE", "s3://bucket/prefix"), ("FACESENSE_STORE", "./var/store"),
    ("FACESENSE_STORE", "file:///srv/store"), ("FACESENSE_REDIS_URL", "rediss://:pw@host:6380/0"),
    ("FACESENSE_WORKER_METRICS_PORT", "0"), ("FACESENSE_FACE_MARGIN", "0.5"),
])
def test_good_values_pass(variable, value):
    Settings.from_env({variable: value})


def test_secrets_are_masked_in_the_error_too():
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"FACESENSE_REDIS_URL": "http://user:hunter2@redis:6379"})
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


def test_every_default_passes_its_own_rule_and_every_rule_names_a_setting():
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    assert set(settings_rules.RULES) <= set(fields)
    for name, f in fields.items():
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        default = f.default
        raw = ":".join(default) if isinstance(default, tuple) else str(default)
        assert settings_rules.problem(name, kind, default, raw) is None, name


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI in a child process, with only these FACESENSE_* variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FACESENSE_")}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", [["config"], ["jobs"], ["worker"]])
def test_the_cli_exits_2_with_one_line_and_no_traceback(command):
    proc = run_cli(*command, env={"FACESENSE_SHARD_SIZE": "abc"})
    assert proc.returncode == 2, proc
    assert proc.stderr.strip().splitlines() == [
        "configuration error: FACESENSE_SHARD_SIZE='abc' is not a whole number "
        "(allowed: a whole number >= 1)"]
    assert proc.stdout == ""


def test_config_prints_each_setting_its_value_masked_and_where_it_came_from():
    env = {"FACESENSE_SHARD_SIZE": "128", "FACESENSE_WEBHOOK_SECRET": "s3cret",
           "FACESENSE_REDIS_URL": "redis://:hunter2@redis:6379/0"}
    proc = run_cli("config", "--json", "--api", "http://api.example:8000", env=env)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert set(shown) == {f"FACESENSE_{f.name.upper()}" for f in dataclasses.fields(Settings)}
    assert shown["FACESENSE_SHARD_SIZE"] == {"value": 128, "source": "environment"}
    assert shown["FACESENSE_BATCH_SIZE"] == {"value": 0, "source": "default"}
    assert shown["FACESENSE_WEBHOOK_SECRET"] == {"value": "***", "source": "environment"}
    assert shown["FACESENSE_REDIS_URL"]["value"] == "redis://:***@redis:6379/0"
    assert shown["FACESENSE_API_URL"] == {"value": "http://api.example:8000",
                                          "source": "command line (--api)"}
    assert "hunter2" not in proc.stdout and "s3cret" not in proc.stdout
    text = run_cli("config", "--only-set", env=env).stdout.splitlines()
    assert len(text) == 3 and all(line.rstrip().endswith("environment") for line in text), text


def test_gunicorn_refuses_a_bad_setting_in_one_line_before_any_worker_boots():
    # the API image's command, with a bad setting: exit 2 and the line, not a worker's traceback
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FACESENSE_")}
    proc = subprocess.run([gunicorn, "-c", "python:api.gunicorn_conf", "--bind", "127.0.0.1:0",
                           "api:create_app()"], env={**clean, "FACESENSE_DEVICE": "gpu"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "configuration error: FACESENSE_DEVICE='gpu' is not a known value" in proc.stderr
    assert "Traceback" not in proc.stderr
