"""The CLI's and the Client's housekeeping against a served API: names and tags at submission,
the filtered job list, deleting jobs and model versions, and a running job's pace."""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stderr, redirect_stdout

import pytest
import redis

from api import create_app
from cli.main import main
from cli.manage import duration, pace_text
from cli.tables import job_text
from facesense.client import ApiError, Client
from facesense.keys import hash_key, new_key
from facesense.registry import Registry
from facesense.storage import store_from_settings
from tests.servers import serving

OPS = new_key()


@pytest.fixture(scope="module")
def url(settings, redis_url, tmp_path_factory):
    """A served API on a Redis database and local store of this module's own (no worker: its
    jobs stay queued), an admin key, and a production model."""
    db_url = re.sub(r"/\d+$", "/11", redis_url)
    redis.Redis.from_url(db_url).flushdb()
    s = settings.replace(redis_url=db_url, store=str(tmp_path_factory.mktemp("cli-manage")),
                         admin_keys=f"ops:{hash_key(OPS)}", lease_ttl_s=0)  # nothing to settle
    registry = Registry(store_from_settings(s))
    registry.promote(registry.register(b"w", {"classes": ["happy", "sad"]})["version"])
    registry.register(b"spare", {"classes": ["happy", "sad"]}, version="spare-cli")  # unused
    with serving(create_app(s)) as served:
        yield served
    redis.Redis.from_url(db_url).flushdb()


def cli(url: str, *argv: str) -> tuple[int, str, str]:
    """Run `facesense ARGV --api URL --key OPS`; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([*argv, "--api", url, "--key", OPS])
    return code, out.getvalue(), err.getvalue()


def test_jobs_are_named_tagged_listed_filtered_and_deleted_from_the_command_line(url, base_dir):
    folder = base_dir / "cli-manage-source"
    folder.mkdir(exist_ok=True)
    # Given two jobs submitted with names and tags
    code, first, _ = cli(url, "submit", str(folder), "--name", 'Spring ad <A> "x"', "--tag", "spring",
                         "--tag", "tv")
    assert code == 0
    code, second, _ = cli(url, "submit", str(folder), "--name", "Summer ad", "--tag", "summer")
    first, second = first.strip(), second.strip()

    # Then the list filters by tag, name and status and shows the name escaped, the tags, source
    code, out, _ = cli(url, "jobs", "--tag", "spring")
    assert code == 0 and out.splitlines()[0].startswith(first) and len(out.splitlines()) == 1
    assert '"Spring ad <A> \\"x\\""' in out and "[spring,tv]" in out and str(folder) in out
    code, out, _ = cli(url, "jobs", "--name", "summer", "--status", "queued", "--since", "1h",
                       "--json")
    assert [j["id"] for j in json.loads(out)] == [second]
    assert cli(url, "jobs", "--until", "2000-01-01", "--json")[1].strip() == "[]"

    # When a queued job is deleted: refused, naming the fix; once cancelled, it goes
    code, _, err = cli(url, "jobs", "delete", first)
    assert code == 1 and "cancel it first" in err
    assert cli(url, "cancel", first)[0] == 0
    code, out, _ = cli(url, "jobs", "delete", first)  # no settle time here (lease_ttl_s=0)
    assert code == 0 and out.startswith(f"{first} deleted")
    assert [j["id"] for j in json.loads(cli(url, "jobs", "--json")[1])] == [second]


def test_the_client_pages_filters_and_deletes(url, base_dir):
    api = Client(url, api_key=OPS)
    folder = base_dir / "client-manage-source"
    folder.mkdir(exist_ok=True)
    made = [api.submit(str(folder), name=f"batch {i}", tags=["batch"])["id"] for i in range(5)]
    page = api.jobs_page(2, tag="batch")
    assert [j["id"] for j in page["jobs"]] == made[:-3:-1] and page["next_cursor"]
    assert [j["id"] for j in api.iter_jobs(tag="batch", status=["queued"])] == made[::-1]
    assert [j["id"] for j in api.jobs(3, name="BATCH")] == made[:-4:-1]
    api.cancel(made[0])
    assert api.delete_job(made[0])["deleted"]
    with pytest.raises(ApiError) as refused:
        api.delete_job(made[1])
    assert refused.value.status == 409
    version = api.models()["aliases"]["production"]["version"]
    with pytest.raises(ApiError) as behind_alias:
        api.delete_model(version)
    assert behind_alias.value.status == 409 and "production" in str(behind_alias.value)


def test_a_model_version_is_deleted_from_the_command_line(url):
    production = Client(url, api_key=OPS).models()["aliases"]["production"]["version"]
    code, _, err = cli(url, "models", "delete", "no-such-version")
    assert code == 1 and "no model version" in err
    code, _, err = cli(url, "models", "delete", production)
    assert code == 1 and "alias" in err
    code, out, _ = cli(url, "models", "delete", "spare-cli")
    assert code == 0 and out.startswith("spare-cli deleted")
    versions = [v["version"] for v in json.loads(cli(url, "models", "--json")[1])["versions"]]
    assert "spare-cli" not in versions and production in versions


def test_the_progress_line_shows_a_running_jobs_rate_and_time_left():
    record = {"status": "running", "timing": {"unit": "images", "rate": 12.5, "eta_s": 754,
                                              "elapsed_s": 30}}
    assert pace_text(record) == ", 12.5 images/s, 12m 34s left"
    slow = {"status": "running", "timing": {"unit": "epochs", "rate": 0.01, "eta_s": 7300}}
    assert pace_text(slow) == ", 0.60 epochs/min, 2h 01m left"
    assert pace_text({"status": "running", "timing": {"unit": "images", "rate": None}}) == ""
    assert pace_text({"status": "queued", "timing": None}) == ""
    assert duration(42.4) == "42s"
    running = {"id": "j", "type": "classify", "status": "running", "model_version": "v",
               "progress": {"done": 250, "total": 1000, "failed": 0}, **record}
    assert job_text(running).endswith("250/1000 images, 0 failed, 12.5 images/s, 12m 34s left")
