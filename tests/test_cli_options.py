"""The CLI behaves like the tools people know: --api, --key and --json before or after the
command, --json wherever something is printed, help on every option, quiet on a closed pipe."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from api import create_app
from cli.main import parser
from cli.options import EXIT_PIPE, _all_parsers, finish
from facesense.keys import hash_key
from tests.imagegen import make_folder
from tests.servers import serving

KEY = "test-key-for-the-cli-options"


def parse(line: str) -> argparse.Namespace:
    return finish(parser().parse_args(line.split()))


@pytest.mark.parametrize("line", [
    "--api U --key K --json jobs", "jobs --api U --key K --json", "--api U jobs --json --key K",
    "--json models promote v --api U --key K", "models promote v --json --api=U --api-key K",
    "--key K status j --api U --json", "submit s --json --api U --key K",
])
def test_global_options_are_taken_before_or_after_the_command(line):
    args = parse(line)
    assert (args.api, args.api_key, args.json) == ("U", "K", True)


def test_given_nowhere_they_take_their_defaults():
    args = parse("jobs")
    assert (args.api, args.api_key, args.json) == (None, None, False)


def test_every_option_and_argument_has_help():
    missing = [f"{p.prog} {a.option_strings or a.dest}" for p in _all_parsers(parser())
               for a in p._actions
               if not isinstance(a, argparse._SubParsersAction) and not a.help]
    assert missing == []


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The CLI in a child process, with no FACESENSE_* variable of the test run's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESENSE_")}
    proc = subprocess.run([sys.executable, "-m", "cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def api(settings, model_version):
    """A real API on a loopback port that asks for a key."""
    keyed = settings.replace(api_keys=f"cli:{hash_key(KEY)}")
    with serving(create_app(keyed)) as url:
        yield url


def test_json_output_wherever_the_options_stand(api, base_dir, unique, model_version):
    dataset = base_dir / f"cli-options-{unique}"
    make_folder(dataset, 4, groups=("happy", "sad"), max_side=64, corrupt=False)
    # Given a training job queued with the options after the command
    job = json.loads(cli("train", str(dataset), "--api", api, "--key", KEY, "--json").stdout)
    # Then jobs, status, models and cancel print JSON with the options before or after
    before = json.loads(cli("--api", api, "--key", KEY, "--json", "jobs", "--limit", "50").stdout)
    after = json.loads(cli("jobs", "--limit", "50", "--json", "--key", KEY, "--api", api).stdout)
    assert job["id"] in [j["id"] for j in before] == [j["id"] for j in after]
    assert json.loads(cli("status", job["id"], "--api", api, "--key", KEY, "--json").stdout)[
        "id"] == job["id"]
    models = json.loads(cli("models", "--json", "--api", api, "--key", KEY).stdout)
    assert model_version["version"] in [m["version"] for m in models["versions"]]
    cancelled = json.loads(cli("cancel", job["id"], "--json", "--api", api, "--key", KEY).stdout)
    assert cancelled["status"] == "cancelled"
    # And a key given after the command is the one sent: a wrong one is refused
    refused = cli("jobs", "--api", api, "--key", "wrong", check=False)
    assert refused.returncode == 1 and "401" in refused.stderr


def test_a_layout_refusal_reaches_the_cli_in_one_line(api, base_dir, unique):
    flat = base_dir / f"cli-flat-{unique}"
    make_folder(flat, 2, groups=("only",), max_side=64, corrupt=False)
    proc = cli("train", str(flat), "--api", api, "--key", KEY, check=False)
    assert proc.returncode == 1 and "training needs at least 2" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_closed_pipe_ends_quietly():
    # Given a reader that is gone before the command writes (as `| head` after its lines)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESENSE_")}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "config"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    # Then it stops with SIGPIPE's exit code and says nothing
    assert proc.wait(120) == EXIT_PIPE
    assert proc.stderr.read() == b""
    proc.stderr.close()


def test_a_pipe_closed_mid_stream_by_head_ends_quietly():
    result = subprocess.run(
        f"set -o pipefail; {sys.executable} -m cli.main config | head -n 2",
        shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("FACESENSE_")})
    assert len(result.stdout.splitlines()) == 2
    assert result.stderr == ""
    assert result.returncode in (0, EXIT_PIPE)  # 0 when all was written before head left
