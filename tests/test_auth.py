"""API keys: 401 without a valid key, each key sees only its own jobs, admins see all,
hashes compared in constant time, no open API on a public address, no secrets in logs."""

from __future__ import annotations

import hmac
import io
import logging
import os
import re
import subprocess
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import redis
import yaml

from api import create_app
from cli.main import main
from facesense import keys
from facesense.client import ApiError, Client
from facesense.errors import ConfigError
from facesense.keys import Keyring, hash_key, new_key
from facesense.settings import describe
from facesense.state import redis_keys
from facesense.state.records import JobRecords
from tests.servers import serving

ALICE, BOB, OPS = new_key(), new_key(), new_key()
ROOT = Path(__file__).resolve().parent.parent


def bearer(key: str) -> dict:
    """The Authorization header for a key."""
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def keyed_settings(settings, redis_url):
    """Keys for alice, bob (users) and ops (admin); job records in a Redis database no worker
    listens on, so the jobs these tests submit are recorded and queued but never run."""
    db_url = re.sub(r"/\d+$", "/8", redis_url)
    yield settings.replace(redis_url=db_url,
                           api_keys=f"alice:{hash_key(ALICE)},bob:{hash_key(BOB)}",
                           admin_keys=f"ops:{hash_key(OPS)}")
    redis.Redis.from_url(db_url).flushdb()


@pytest.fixture
def api(keyed_settings, model_version):
    """A test client of the keyed app."""
    return create_app(keyed_settings).test_client()


@pytest.fixture
def folder(base_dir, unique):
    """An (empty) folder under the allowed roots: a valid source for a submission."""
    path = base_dir / f"auth-{unique}"
    path.mkdir()
    return str(path)


def submit(api, key: str, source: str) -> str:
    """Queue a scoring job as key's holder; returns its id."""
    resp = api.post("/v1/jobs", json={"type": "classify", "source": source}, headers=bearer(key))
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()["id"]


def test_no_key_or_a_wrong_key_is_401_json_with_a_challenge(api):
    for headers in ({}, {"Authorization": "Basic YWxpY2U6eA=="}, bearer("fsk_not-a-key")):
        resp = api.get("/v1/jobs", headers=headers)
        assert resp.status_code == 401 and resp.mimetype == "application/json"
        assert resp.get_json()["error"]["code"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="facesense"')
    assert 'error="invalid_token"' in api.get("/v1/jobs", headers=bearer("x")).headers[
        "WWW-Authenticate"]
    assert api.post("/v1/jobs", json={}).status_code == 401  # before any validation
    assert api.get("/v1/models").status_code == 401
    assert api.get("/v1/models", headers=bearer(BOB)).status_code == 200


# Stable ids: the key is random, and every test process must collect the same names.
@pytest.mark.parametrize("query", [f"api_key={ALICE}", f"limit=5&x={ALICE}", "token=abc",
                                   "access_token=abc"],
                         ids=["api_key", "other_param", "token", "access_token"])
def test_a_key_in_the_url_is_refused_even_with_a_good_header(api, query):
    resp = api.get(f"/v1/jobs?{query}", headers=bearer(ALICE))
    assert resp.status_code == 401 and "Authorization: Bearer" in resp.get_json()["error"][
        "message"]
    assert api.get("/v1/jobs?limit=5", headers=bearer(ALICE)).status_code == 200


def test_access_log_lines_never_carry_a_key():
    from facesense.logs import RedactKeys

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactKeys())
    access = logging.getLogger("werkzeug")
    access.addHandler(handler)
    try:  # what werkzeug logs for a request with a key in its URL
        access.warning('%s - - "%s" %s -', "127.0.0.1", f"GET /v1/jobs?api_key={ALICE} HTTP/1.1",
                       401)
    finally:
        access.removeHandler(handler)
    line = out.getvalue()
    assert ALICE not in line and "api_key=fsk_[redacted]" in line and "401" in line


def test_health_and_the_openapi_document_stay_open(api):
    assert api.get("/healthz").status_code == 200
    assert api.get("/openapi.json").status_code == 200


def test_a_job_is_visible_only_to_its_key_and_to_admins(api, folder, keyed_settings):
    job_id = submit(api, ALICE, folder)
    mine = api.get(f"/v1/jobs/{job_id}", headers=bearer(ALICE)).get_json()
    assert mine["owner"] == "alice"
    stored = JobRecords(redis.Redis.from_url(keyed_settings.redis_url), None).get(job_id)
    assert stored["owner"] == "alice" and ALICE not in str(stored)  # the name, never the key
    unknown = api.get("/v1/jobs/0123456789abcdef", headers=bearer(BOB)).get_json()
    for method, path in (("get", f"/v1/jobs/{job_id}"), ("get", f"/v1/jobs/{job_id}/results"),
                         ("post", f"/v1/jobs/{job_id}/cancel"),
                         ("post", f"/v1/jobs/{job_id}/retry")):
        resp = getattr(api, method)(path, headers=bearer(BOB))
        # 404 exactly as for an id that does not exist: bob learns nothing about alice's jobs
        assert resp.status_code == 404, (path, resp.get_json())
        assert resp.get_json()["error"]["message"] == unknown["error"]["message"].replace(
            "0123456789abcdef", job_id)
    assert api.get(f"/v1/jobs/{job_id}", headers=bearer(OPS)).status_code == 200
    assert api.get(f"/v1/jobs/{job_id}/results", headers=bearer(ALICE)).status_code == 409


def test_listing_shows_only_the_callers_jobs_and_everything_to_an_admin(api, folder):
    job_a, job_b = submit(api, ALICE, folder), submit(api, BOB, folder)

    def listed(key):
        return [j["id"] for j in api.get("/v1/jobs?limit=200", headers=bearer(key)).get_json()[
            "jobs"]]

    assert job_a in listed(ALICE) and job_b not in listed(ALICE)
    assert job_b in listed(BOB) and job_a not in listed(BOB)
    assert {job_a, job_b} <= set(listed(OPS))
    assert {j["owner"] for j in api.get("/v1/jobs?limit=200", headers=bearer(ALICE)).get_json()[
        "jobs"]} == {"alice"}


def test_cancel_works_for_the_owner_and_the_archived_record_keeps_its_owner(api, folder,
                                                                             keyed_settings):
    job_id = submit(api, ALICE, folder)
    assert api.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(BOB)).status_code == 404
    resp = api.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(ALICE))
    assert resp.status_code == 200 and resp.get_json()["status"] == "cancelled"
    # Once Redis forgets the job, the record comes from storage: still alice's only.
    redis.Redis.from_url(keyed_settings.redis_url).delete(redis_keys.job(job_id))
    assert api.get(f"/v1/jobs/{job_id}", headers=bearer(BOB)).status_code == 404
    assert api.get(f"/v1/jobs/{job_id}", headers=bearer(ALICE)).get_json()["owner"] == "alice"


def test_promoting_a_model_needs_an_admin_key(api, model_version, unique, folder):
    path = f"/v1/models/{model_version['version']}/promote"
    resp = api.post(path, json={"alias": f"auth-{unique}"}, headers=bearer(ALICE))
    assert resp.status_code == 403 and "admin key" in resp.get_json()["error"]["message"]
    # A training job that would move the alias is a promotion too.
    for policy in ("always", "if_better"):
        resp = api.post("/v1/jobs", json={"type": "train", "dataset": str(folder),
                                          "promote": policy}, headers=bearer(ALICE))
        assert resp.status_code == 403 and "admin key" in resp.get_json()["error"]["message"]
    resp = api.post(path, json={"alias": f"auth-{unique}"}, headers=bearer(OPS))
    assert resp.status_code == 200 and resp.get_json()["history"][-1]["by"] == "key ops"


def test_every_configured_hash_is_compared_with_compare_digest(monkeypatch):
    calls, real = [], hmac.compare_digest

    def counting(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys.hmac, "compare_digest", counting)
    ring = Keyring({"alice": hash_key(ALICE), "bob": hash_key(BOB)}, {"ops": hash_key(OPS)})
    assert ring.identify(ALICE) == keys.Caller("alice", False)
    assert len(calls) == 3  # no early exit on the first match
    assert ring.identify(OPS) == keys.Caller("ops", True)
    assert ring.identify("fsk_wrong") is None and len(calls) == 9
    assert all(ALICE.encode() not in pair for pair in calls)  # hashes compared, not keys


def test_who_sees_which_job():
    alice, ops = keys.Caller("alice", False), keys.Caller("ops", True)
    assert alice.sees("alice") and not alice.sees("bob") and not alice.sees(None)
    assert ops.sees("alice") and ops.sees(None)
    assert keys.OPEN.sees("alice") and keys.OPEN.sees(None)  # no keys configured: all open
    assert not keys.ANONYMOUS.sees(None) and not keys.ANONYMOUS.sees("alice")


def test_bad_key_configuration_is_refused_without_echoing_it(settings):
    with pytest.raises(ConfigError) as e:
        create_app(settings.replace(api_keys=f"alice:{ALICE}"))  # a raw key pasted by mistake
    assert "FACESENSE_API_KEYS" in str(e.value) and ALICE not in str(e.value)
    with pytest.raises(ConfigError) as e:
        create_app(settings.replace(api_keys=ALICE))  # no name at all
    assert ALICE not in str(e.value)
    with pytest.raises(ConfigError, match="both"):
        Keyring.from_settings(settings.replace(api_keys=f"a:{hash_key(ALICE)}",
                                               admin_keys=f"a:{hash_key(OPS)}"))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "api.example.com"])
def test_the_api_refuses_a_public_address_with_no_keys(settings, host):
    with pytest.raises(ConfigError, match="FACESENSE_ALLOW_OPEN_API"):
        create_app(settings.replace(api_host=host))
    create_app(settings.replace(api_host=host, allow_open_api=1))
    create_app(settings.replace(api_host=host, api_keys=f"a:{hash_key(ALICE)}"))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_addresses_need_no_keys(settings, host):
    create_app(settings.replace(api_host=host))


def test_facesense_up_refuses_a_public_address_before_starting_anything(monkeypatch, tmp_path):
    for name in ("FACESENSE_API_KEYS", "FACESENSE_ADMIN_KEYS", "FACESENSE_ALLOW_OPEN_API"):
        monkeypatch.delenv(name, raising=False)
    err = io.StringIO()
    with redirect_stderr(err):
        # exit 2: a configuration error, as every bad setting is
        assert main(["up", "--host", "0.0.0.0", "--data", str(tmp_path / "up")]) == 2
    assert "refusing to serve the API on '0.0.0.0'" in err.getvalue()
    assert not (tmp_path / "up").exists()  # no Redis, no store: nothing was started


def test_gunicorn_with_the_compose_api_environment_refuses_to_boot_without_keys(tmp_path):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["api"]
    dockerfile = (ROOT / compose["build"]["dockerfile"]).read_text()
    bind = re.search(r'"--bind", "([^"]+)"', dockerfile).group(1)
    # compose defaults (no keys); a required secret (${X:?message}) as the .env would give it
    env = {k: re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "env-secret",
                     re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)))
           for k, v in compose["environment"].items() if k.startswith("FACESENSE_")}
    assert env["FACESENSE_API_HOST"] == bind.rpartition(":")[0]  # the app is told the bind
    env.update(FACESENSE_STORE=str(tmp_path), PATH=os.environ["PATH"])
    proc = subprocess.run([str(ROOT / ".venv/bin/gunicorn"), "--bind", "127.0.0.1:0",
                           "--workers", "1", "api:create_app()"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "refusing to serve the API on '0.0.0.0' with no API keys" in proc.stderr


@pytest.fixture
def server(keyed_settings, model_version):
    """The keyed app on a real HTTP server (werkzeug, in a thread) on a free loopback port."""
    with serving(create_app(keyed_settings)) as url:
        yield url


def test_the_client_and_the_cli_send_the_key(server, monkeypatch):
    monkeypatch.delenv("FACESENSE_API_KEY", raising=False)
    assert isinstance(Client(server, api_key=ALICE).jobs(), list)
    with pytest.raises(ApiError, match=r"401.*FACESENSE_API_KEY"):
        Client(server).jobs()
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        assert main(["--api", server, "jobs"]) == 1
        assert main(["--api", server, "--api-key", BOB, "models"]) == 0
        monkeypatch.setenv("FACESENSE_API_KEY", BOB)
        assert main(["--api", server, "models"]) == 0


def test_logs_hold_no_key_and_no_storage_secret(server, keyed_settings, caplog, folder):
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    caplog.set_level(logging.DEBUG)
    client = Client(server, api_key=ALICE)
    job_id = client.submit(folder)["id"]
    client.job(job_id)
    with pytest.raises(ApiError):
        Client(server, api_key=ALICE + "x").job(job_id)  # a near miss is logged, not echoed
    with pytest.raises(ApiError):
        client.submit("/etc")
    password_url = keyed_settings.redis_url.replace("://", "://:hunter2-pw@")
    logging.getLogger("tests").info("settings: %r %s", keyed_settings.replace(
        api_key=ALICE, redis_url=password_url), describe())
    assert "rejected an invalid API key" in caplog.text  # the logs did capture the requests
    assert f"GET /v1/jobs/{job_id}" in caplog.text and "api_key='***'" in caplog.text
    for needle in (ALICE, ALICE + "x", secret, "hunter2-pw"):
        assert needle not in caplog.text


def test_keys_new_prints_a_key_and_the_line_that_configures_its_hash(monkeypatch):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        assert main(["keys", "new", "carol", "--admin"]) == 0
    key = out.getvalue().strip()
    assert key.startswith("fsk_") and len(key) > 40
    assert f"FACESENSE_ADMIN_KEYS=carol:{hash_key(key)}" in err.getvalue()
    monkeypatch.setattr("sys.stdin", io.StringIO(key + "\n"))
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["keys", "hash", "carol"]) == 0
    assert out.getvalue().strip() == f"FACESENSE_API_KEYS=carol:{hash_key(key)}"
    ring = Keyring.from_settings(settings_from_line(out.getvalue().strip()))
    assert ring.identify(key) == keys.Caller("carol", False)


def settings_from_line(line: str):
    """Settings from one configuration line, as the server would read it."""
    from facesense.settings import Settings

    name, _, value = line.partition("=")
    return Settings.from_env({name: value})


def key_line(name: str, key: str, admin: bool = False) -> str:
    """The line `facesense keys new` prints for a key."""
    return f"FACESENSE_{'ADMIN' if admin else 'API'}_KEYS={name}:{hash_key(key)}\n"


def test_keys_rotate_through_the_keys_file_without_a_restart(keyed_settings, tmp_path):
    old, new = new_key(), new_key()
    path = tmp_path / "keys.env"
    path.write_text("# rotated by ops\n" + key_line("ci", old) + "\n" + key_line("ops2", OPS, True))
    app = create_app(keyed_settings.replace(api_keys="", admin_keys="", keys_file=str(path)))
    app.extensions["facesense_keys"].check_every_s = 0.05  # 1 s in production
    api = app.test_client()

    def status(key: str) -> int:
        time.sleep(0.06)
        return api.get("/v1/jobs", headers=bearer(key)).status_code

    assert status(old) == 200 and status(new) == 401
    assert app.extensions["facesense_keys"].identify(OPS) == keys.Caller("ops2", True)
    path.write_text(path.read_text() + key_line("ci-next", new))  # step 1: add the new key
    assert status(new) == 200 and status(old) == 200  # both work meanwhile
    path.write_text(key_line("ci-next", new) + key_line("ops2", OPS, True))  # step 2: drop old
    assert status(old) == 401 and status(new) == 200


def test_a_broken_keys_file_keeps_the_previous_keys_and_a_deleted_one_revokes(tmp_path, caplog):
    path = tmp_path / "keys.env"
    path.write_text(key_line("alice", ALICE) + key_line("bob", BOB))
    ring = Keyring({"ops": hash_key(OPS)}, {}, path=path, check_every_s=0)
    assert ring.identify(ALICE) == keys.Caller("alice", False)
    path.write_text(f"FACESENSE_API_KEYS=alice:{ALICE}\n")  # a raw key pasted by mistake
    with caplog.at_level(logging.ERROR, logger="facesense.keys"):
        assert ring.identify(BOB) == keys.Caller("bob", False)  # still the old keys
    assert "previous keys stay in force" in caplog.text and ALICE not in caplog.text
    path.write_bytes(b"\xff\xfe not text")
    assert ring.identify(BOB) == keys.Caller("bob", False)  # not UTF-8: the same
    path.write_text(key_line("ops", BOB))  # clashes with an environment key name: the same
    assert ring.identify(BOB) == keys.Caller("bob", False)
    path.write_text("# nobody\n")
    assert ring.identify(ALICE) is None and ring.enabled  # emptied: locked, never open
    assert ring.identify(OPS) == keys.Caller("ops", False)  # the environment's keys stay
    path.write_text(key_line("alice", ALICE))
    assert ring.identify(ALICE) == keys.Caller("alice", False)
    path.write_text(key_line("alice", BOB))  # same size, same instant: the content decides
    assert ring.identify(ALICE) is None and ring.identify(BOB) == keys.Caller("alice", False)
    path.unlink()  # deleting the file revokes its keys
    assert ring.identify(ALICE) is None and ring.enabled


def test_the_keys_file_is_checked_at_start_up(tmp_path, settings):
    with pytest.raises(ConfigError, match="cannot read"):
        Keyring.from_settings(settings.replace(keys_file=str(tmp_path / "missing.env")))
    bad = tmp_path / "bad.env"
    bad.write_text(f"# comment\nAPI_KEYS=bob:{hash_key(BOB)}\n")
    with pytest.raises(ConfigError, match=r"bad\.env line 2") as e:
        Keyring.from_settings(settings.replace(keys_file=str(bad)))
    assert hash_key(BOB) not in str(e.value)
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        Keyring.from_settings(settings.replace(keys_file=str(bad)))
    bad.write_text(key_line("alice", ALICE))  # the same name in the environment and the file
    with pytest.raises(ConfigError, match="also in the environment: alice"):
        Keyring.from_settings(settings.replace(api_keys=f"alice:{hash_key(BOB)}",
                                               keys_file=str(bad)))


def test_one_key_under_a_user_and_an_admin_name_is_refused_and_the_old_keys_stay(tmp_path,
                                                                                 settings):
    # At start-up: refused, naming the names (never the key or its hash)
    with pytest.raises(ConfigError, match="several names: alice, root") as e:
        Keyring({"alice": hash_key(ALICE)}, {"root": hash_key(ALICE)})
    assert hash_key(ALICE) not in str(e.value)
    # In a keys file being edited: the previous keys stay in force
    path = tmp_path / "keys.env"
    path.write_text(key_line("alice", ALICE))
    ring = Keyring({}, {}, path=path, check_every_s=0)
    path.write_text(key_line("alice", ALICE) + f"FACESENSE_ADMIN_KEYS=root:{hash_key(ALICE)}\n")
    assert ring.identify(ALICE) == keys.Caller("alice", False)  # never an admin
