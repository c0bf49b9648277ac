"""Job names and tags: bounded and checked at submission, shown on the list, and the list
filtered by name prefix, tag, status and date, paged back in time by cursor; a job's pace."""

from __future__ import annotations

import io
import re
import time

import pytest
import redis

from api import create_app
from facesense.keys import hash_key, new_key
from facesense.registry import Registry
from facesense.state import joblist
from facesense.state.pace import timing
from facesense.state.records import JobRecords
from facesense.state.status import JobStatus
from facesense.storage import store_from_settings

ALICE, BOB, OPS = new_key(), new_key(), new_key()


def bearer(key: str) -> dict:
    """The Authorization header for a key."""
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def own(settings, redis_url, tmp_path_factory):
    """A Redis database and a local store of this module's own (no worker runs its jobs), keys
    for alice, bob and ops (admin), and a production model to name."""
    db_url = re.sub(r"/\d+$", "/10", redis_url)
    redis.Redis.from_url(db_url).flushdb()
    s = settings.replace(redis_url=db_url, store=str(tmp_path_factory.mktemp("labels")),
                         api_keys=f"alice:{hash_key(ALICE)},bob:{hash_key(BOB)}",
                         admin_keys=f"ops:{hash_key(OPS)}")
    registry = Registry(store_from_settings(s))
    registry.promote(registry.register(b"w", {"classes": ["happy", "sad"]})["version"])
    yield s
    redis.Redis.from_url(db_url).flushdb()


@pytest.fixture(scope="module")
def api(own):
    """A test client of the keyed app."""
    return create_app(own).test_client()


@pytest.fixture(scope="module")
def folder(base_dir):
    """A valid source for a submission."""
    path = base_dir / "labels-source"
    path.mkdir(exist_ok=True)
    return str(path)


def submit(api, folder, key=ALICE, **fields):
    """A queued scoring job with these fields; returns the response."""
    return api.post("/v1/jobs", json={"type": "classify", "source": folder, **fields},
                    headers=bearer(key))


def ids(api, query: str, key=ALICE) -> list[str]:
    """The ids a list query answers, every page followed by its cursor."""
    out, cursor = [], ""
    while True:
        page = api.get(f"/v1/jobs?{query}&limit=2{cursor}", headers=bearer(key))
        assert page.status_code == 200, page.get_json()
        body = page.get_json()
        out += [j["id"] for j in body["jobs"]]
        if body["next_cursor"] is None:
            return out
        cursor = f"&cursor={body['next_cursor']}"


@pytest.mark.parametrize("fields, message", [
    ({"name": "x" * 121}, "1 to 120 characters"),
    ({"name": "two\nlines"}, "control characters"),
    ({"name": ""}, None),
    ({"tags": [f"t{i}" for i in range(17)]}, "at most 16 tags"),
    ({"tags": ["x" * 41]}, "1 to 40 characters"),
    ({"tags": "spring"}, "wrong type"),
    ({"tags": [3]}, "must be a string"),
    ({"tags": ["a,b"]}, "comma"),
])
def test_names_and_tags_are_bounded_and_checked(api, folder, fields, message):
    resp = submit(api, folder, **fields)
    if message is None:  # an empty name is no name
        assert resp.status_code == 202 and "name" not in resp.get_json()
        return
    assert resp.status_code == 400 and message in resp.get_json()["error"]["message"]


def test_a_name_and_tags_are_kept_as_given_and_an_upload_sends_tags_comma_separated(api):
    name = "<b>Spring</b> ad test — Tuesday & co"
    resp = api.post("/v1/jobs", data={"type": "classify", "name": name, "tags": "autumn, radio ,autumn",
                                      "files": [(io.BytesIO(b"x"), "a.jpg")]},
                    content_type="multipart/form-data", headers=bearer(ALICE))
    assert resp.status_code == 202, resp.get_json()
    record = api.get(f"/v1/jobs/{resp.get_json()['id']}", headers=bearer(ALICE)).get_json()
    assert record["name"] == name and record["tags"] == ["autumn", "radio"]


def test_the_list_filters_by_name_prefix_tag_status_and_date_across_pages(api, folder, own):
    # Given alice's five jobs (two cancelled), and bob's with the same tag
    made = {}
    for key, name, tags in (("a1", "Spring ad A", ["spring", "tv"]), ("a2", "spring ad B", ["spring"]),
                            ("a3", "Summer ad", ["summer"]), ("a4", "Spring poster", ["print"]),
                            ("a5", "untitled", [])):
        made[key] = submit(api, folder, name=name, tags=tags).get_json()["id"]
    bobs = submit(api, folder, BOB, name="Spring bob", tags=["spring"]).get_json()["id"]
    for key in ("a2", "a4"):
        api.post(f"/v1/jobs/{made[key]}/cancel", headers=bearer(ALICE))
    newest_first = lambda *keys: [made[k] for k in sorted(keys, reverse=True)]  # noqa: E731

    # Then each filter, paged two at a time, finds exactly its jobs, newest first
    assert ids(api, "name=spring") == newest_first("a1", "a2", "a4")
    assert ids(api, "name=SPRING%20AD") == newest_first("a1", "a2")
    assert ids(api, "tag=spring") == newest_first("a1", "a2")
    assert ids(api, "tag=spring&status=cancelled") == newest_first("a2")
    assert ids(api, "name=s&status=queued,running") == newest_first("a1", "a3")
    assert bobs not in ids(api, "tag=spring") and ids(api, "tag=spring", BOB) == [bobs]
    assert bobs in ids(api, "tag=spring", OPS)  # an admin sees every key's
    created = {k: api.get(f"/v1/jobs/{v}", headers=bearer(ALICE)).get_json()["created_at"]
               for k, v in made.items()}
    since = ids(api, f"since={created['a3']}&name=s")
    assert since == newest_first("a3", "a4")
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created["a1"] - 1))
    assert set(newest_first("a1", "a2", "a3", "a4", "a5")) <= set(ids(api, f"since={iso}"))
    assert ids(api, f"until={created['a1']}&name=s") == []

    # and the list shows names, tags and sources
    jobs = api.get("/v1/jobs?tag=tv", headers=bearer(ALICE)).get_json()["jobs"]
    assert [(j["name"], j["tags"], j["source"]) for j in jobs] == [
        ("Spring ad A", ["spring", "tv"], f"file://{folder}")]


@pytest.mark.parametrize("query, message", [
    ("status=done", "unknown status"), ("since=last%20week", "ISO 8601"),
    ("cursor=zzz", "cursor"), ("offset=3&tag=x", "page with cursor"), ("since=nan", "finite"),
])
def test_bad_list_queries_are_400s_naming_the_problem(api, query, message):
    resp = api.get(f"/v1/jobs?{query}", headers=bearer(ALICE))
    assert resp.status_code == 400 and message in resp.get_json()["error"]["message"]


def test_a_sparse_filter_reads_a_bounded_number_of_records_per_page(own, monkeypatch):
    # Given 30 jobs of which only the oldest carries the name looked for
    jobs = JobRecords(redis.Redis.from_url(own.redis_url), store_from_settings(own))
    target = jobs.create("classify", source="s", owner="carol", name="needle")["id"]
    for _ in range(29):
        jobs.create("classify", source="s", owner="carol", name="hay")
    monkeypatch.setattr(joblist, "SCAN_MAX", 10)
    monkeypatch.setattr(joblist, "BATCH", 4)
    # When pages are asked for, each reads at most SCAN_MAX records and hands on a cursor
    pages, cursor = [], None
    while True:
        found, cursor = joblist.find(jobs.redis, joblist.JobQuery(owner="carol", name="nee",
                                                                  cursor=cursor))
        pages.append([r["id"] for r in found])
        if cursor is None:
            break
    # Then the needle is found on the page that reaches it, after short empty pages
    assert pages == [[], [], [target]]  # 12 read, 12 read, the last 6


def test_a_running_job_has_a_rate_and_time_left():
    t0 = 1_000_000.0
    running = {"type": "classify", "status": "running", "started_at": t0, "done": 300,
               "total": 1000}
    assert timing(running, at=t0 + 60) == {"unit": "images", "elapsed_s": 60.0, "rate": 5.0,
                                           "eta_s": 140.0}
    assert timing({**running, "total": 0}, at=t0 + 60)["eta_s"] is None  # still listing
    assert timing({**running, "done": 0}, at=t0 + 60)["rate"] is None
    assert timing({"status": "queued"}) is None
    done = {**running, "status": JobStatus.SUCCEEDED.value, "finished_at": t0 + 200, "done": 1000}
    assert timing(done)["eta_s"] == 0 and timing(done)["rate"] == 5.0
    train = {"type": "train", "status": "running", "started_at": t0, "done": 2, "total": 8}
    assert timing(train, at=t0 + 20) == {"unit": "epochs", "elapsed_s": 20.0, "rate": 0.1,
                                         "eta_s": 60.0}
