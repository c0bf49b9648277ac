"""The hostile request set, every one against the API with keys on: no 5xx, and every refusal a
JSON error (hardening issue, "Must show"). The behaviour of each is tested where it belongs;
this sweep only counts what comes back."""

from __future__ import annotations

import io
import re
import zipfile

import pytest
import redis

from api import create_app
from facesense.keys import hash_key, new_key

USER, ADMIN, SCOPED = new_key(), new_key(), new_key()
LONG = "a" * 5000


def bearer(key: str = USER) -> dict:
    return {"Authorization": f"Bearer {key}"}


def zip_of(entries: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
        for name in links:  # a symlink member: unix mode 0o120777 in the high bits
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            z.writestr(info, "/etc/passwd")
    return buf.getvalue()


def upload(*files: tuple[str, bytes], **fields) -> dict:
    data = {"type": "classify", **fields,
            "files": [(io.BytesIO(body), name) for name, body in files]}
    return {"data": data, "content_type": "multipart/form-data"}


def hostile_requests(root: str) -> list[tuple[str, str, str, dict]]:
    """(name, method, path, test-client keyword arguments); bearer(USER) unless headers given."""
    jpg = b"\xff\xd8\xff\xe0" + bytes(64)
    cases = [
        # keys
        ("no key", "GET", "/v1/jobs", {"headers": {}}),
        ("wrong key", "GET", "/v1/jobs", {"headers": bearer("fsk_" + "0" * 40)}),
        ("empty bearer", "GET", "/v1/jobs", {"headers": {"Authorization": "Bearer "}}),
        ("basic auth", "GET", "/v1/jobs", {"headers": {"Authorization": "Basic YTpi"}}),
        ("key in the query", "GET", f"/v1/jobs?api_key={USER}", {}),
        ("key-shaped query value", "GET", "/v1/jobs?x=fsk_abc", {}),
        ("user promotes", "POST", "/v1/models/production/promote", {"json": {"alias": "x"}}),
        ("user takes priority high", "POST", "/v1/jobs",
         {"json": {"type": "classify", "source": root, "priority": "high"}}),
        ("user uploads at priority high", "POST", "/v1/jobs",
         upload(("a.jpg", jpg), priority="high")),
        # a key scoped to <root>/scoped and s3://facesense-test/scoped reaches nothing else
        *[(f"scoped key: {what}", "POST", "/v1/jobs",
           {"json": {"type": "classify", field: where}, "headers": bearer(SCOPED)})
          for what, field, where in (
              ("the global root", "source", root), ("a missing folder", "source", f"{root}/nope"),
              ("dot-dot out", "source", f"{root}/scoped/../x"),
              ("file URL out", "source", f"file://{root}"),
              ("another prefix", "source", "s3://facesense-test/other"),
              ("prefix look-alike", "source", "s3://facesense-test/scopedx"),
              ("dot-dot prefix", "source", "s3://facesense-test/scoped/../other"),
              ("bucket root", "source", "s3://facesense-test"),
              ("another bucket", "source", "s3://elsewhere/scoped"),
              ("manifest out", "manifest", f"{root}/m.csv"),
              ("S3 manifest out", "manifest", "s3://facesense-test/other/m.csv"))],
        ("scoped key: dataset out", "POST", "/v1/jobs",
         {"json": {"type": "train", "dataset": root}, "headers": bearer(SCOPED)}),
        ("scoped key: uploaded manifest line out", "POST", "/v1/jobs",
         {**upload(), "data": {"type": "classify", "manifest": (
             io.BytesIO(b"image\ns3://facesense-test/other/a.jpg\n"), "m.csv")},
          "headers": bearer(SCOPED)}),
        # JSON bodies
        ("JSON over its limit", "POST", "/v1/jobs",
         {"data": '{"type":"classify","source":"' + "x" * 200_000 + '"}',
          "content_type": "application/json"}),
        ("deeply nested JSON", "POST", "/v1/jobs",
         {"data": '{"type":"classify","x":' + "[" * 100_000 + "]" * 100_000 + "}",
          "content_type": "application/json"}),
        ("malformed JSON", "POST", "/v1/jobs", {"data": "{", "content_type": "application/json"}),
        ("JSON array", "POST", "/v1/jobs", {"json": ["classify"]}),
        ("JSON string", "POST", "/v1/jobs", {"json": "classify"}),
        ("not UTF-8", "POST", "/v1/jobs",
         {"data": b'{"type":"\xff\xfe"}', "content_type": "application/json"}),
        ("UTF-16 charset", "POST", "/v1/jobs",
         {"data": '{"type":"classify"}'.encode("utf-16"),
          "content_type": "application/json; charset=utf-16"}),
        ("empty body", "POST", "/v1/jobs", {"data": b"", "content_type": "application/json"}),
        ("text body", "POST", "/v1/jobs", {"data": "type=classify", "content_type": "text/plain"}),
        ("wrong types", "POST", "/v1/jobs", {"json": {"type": 7, "source": ["x"]}}),
        ("unknown type", "POST", "/v1/jobs", {"json": {"type": "rm -rf", "source": root}}),
        ("unknown priority", "POST", "/v1/jobs",
         {"json": {"type": "classify", "source": root, "priority": "urgent"}}),
        ("unknown model", "POST", "/v1/jobs",
         {"json": {"type": "classify", "source": root, "model": LONG}}),
        ("train params of the wrong type", "POST", "/v1/jobs",
         {"json": {"type": "train", "dataset": root, "params": {"epochs": "many"}}}),
        # paths
        *[(f"source {s!r:.40}", "POST", "/v1/jobs", {"json": {"type": "classify", "source": s}})
          for s in ("/etc/passwd", "/root/.aws", "/root/.ssh", "../../etc", root + "/../..",
                    root + "/missing", "bad\0path", LONG, "file:///etc", "s3://", "s3:///x",
                    "ftp://example.com/x", "~root", "")],
        # URLs and webhooks
        ("URL list over its limit", "POST", "/v1/jobs",
         {"json": {"type": "classify", "urls": [f"https://e.com/{i}.jpg" for i in range(11)]}}),
        ("URL with a bad scheme", "POST", "/v1/jobs",
         {"json": {"type": "classify", "urls": ["javascript:alert(1)", "file:///etc/passwd"]}}),
        ("URL list of the wrong type", "POST", "/v1/jobs",
         {"json": {"type": "classify", "urls": [{"url": 7}, None]}}),
        ("callback to metadata", "POST", "/v1/jobs",
         {"json": {"type": "classify", "source": "/etc",
                   "callback_url": "http://169.254.169.254/latest/meta-data/"}}),
        # uploads
        ("file name with NUL", "POST", "/v1/jobs", upload(("v1/evil\0.jpg", jpg))),
        ("file name of 5000 characters", "POST", "/v1/jobs", upload((LONG + ".jpg", jpg))),
        ("file 2000 folders deep", "POST", "/v1/jobs", upload(("d/" * 2000 + "e.jpg", jpg))),
        ("two files under one name", "POST", "/v1/jobs", upload(("ok.jpg", jpg), ("ok.jpg", jpg))),
        ("file under a file's name", "POST", "/v1/jobs", upload(("a.jpg", jpg), ("a.jpg/b.jpg", jpg))),
        ("too many parts", "POST", "/v1/jobs", upload(*[(f"{i}.jpg", jpg) for i in range(60)])),
        ("zip slip", "POST", "/v1/jobs", upload(("x.zip", zip_of({"../../evil.jpg": jpg})))),
        ("absolute zip member", "POST", "/v1/jobs", upload(("x.zip", zip_of({"/tmp/e.jpg": jpg})))),
        ("symlink zip member", "POST", "/v1/jobs", upload(("x.zip", zip_of({}, ("l.jpg",))))),
        ("not a zip", "POST", "/v1/jobs", upload(("x.zip", b"PK\x03\x04 not really"))),
        ("no files", "POST", "/v1/jobs", upload()),
        ("multipart without a boundary", "POST", "/v1/jobs",
         {"data": b"--x\r\n", "content_type": "multipart/form-data"}),
        # ids, versions and pages
        *[(f"{method} {path.replace(LONG, 'a x 5000')}", method, path, {})
          for job_id in (LONG, "..%2F..%2Fetc%2Fpasswd", "%00", "%E2%80%AE", "job.json")
          for method, path in (("GET", f"/v1/jobs/{job_id}"), ("GET", f"/v1/jobs/{job_id}/results"),
                               ("POST", f"/v1/jobs/{job_id}/cancel"),
                               ("POST", f"/v1/jobs/{job_id}/retry"),
                               ("GET", f"/ui/api/jobs/{job_id}/gallery"),
                               ("GET", f"/ui/api/jobs/{job_id}/thumbs/0"))],
        ("thumb index out of range", "GET", f"/ui/api/jobs/{'0' * 32}/thumbs/99999999999999999999", {}),
        ("long model version", "GET", f"/v1/models/{LONG}", {}),
        ("long model history", "GET", f"/ui/api/models/{LONG}/history", {}),
        ("promote a long version", "POST", f"/v1/models/{LONG}/promote",
         {"json": {"alias": "production"}, "headers": bearer(ADMIN)}),
        ("promote to a bad alias", "POST", "/v1/models/production/promote",
         {"json": {"alias": "../x" * 100}, "headers": bearer(ADMIN)}),
        *[(f"page {q}", "GET", f"/v1/jobs?{q}", {})
          for q in ("limit=-1", "limit=" + "9" * 40, "offset=abc", "offset=-5", "status=nope",
                    "limit=1e9", "cursor=%00")],
        # issue 25: the data dir, malformed S3 keys, non-finite and hostile manifests
        *[(f"manifest {where}", "POST", "/v1/jobs",
           {"json": {"type": "classify", "manifest": where}})
          for where in (f"{root}/var/redis/password", f"{root}/var/redis/redis.conf",
                        "s3://facesense-test/../x.csv", "s3://facesense-test/a//b.csv",
                        "s3://facesense-test/./m.csv", "s3://facesense-test/a\\m.csv")],
        ("source: the data dir", "POST", "/v1/jobs",
         {"json": {"type": "classify", "source": f"{root}/var/cache/datasets"}}),
        ("dataset: the data dir", "POST", "/v1/jobs",
         {"json": {"type": "train", "dataset": f"{root}/var/cache/datasets"}}),
        *[(f"uploaded manifest: {name}", "POST", "/v1/jobs",
           {"data": {"type": "classify", "manifest": (io.BytesIO(body), name)},
            "content_type": "multipart/form-data"})
          for name, body in (("nan.jsonl", b'{"image": "s3://b/a.jpg", "x": NaN}\n'),
                             ("big.jsonl", b'{"image": "s3://b/a.jpg", "x": 1e400}\n'),
                             ("long.csv", b"image\n" + b"x" * (2 << 20) + b"\n"),
                             ("empty.jsonl", b"{}\n" * 100_000),
                             ("slash.csv", b"image\n/a\\b.jpg\n"))],
        # methods and routes
        ("DELETE jobs", "DELETE", "/v1/jobs", {}),
        ("PUT healthz", "PUT", "/healthz", {}),
        ("PATCH a job", "PATCH", f"/v1/jobs/{'0' * 32}", {}),
        ("OPTIONS jobs", "OPTIONS", "/v1/jobs", {}),
        ("unknown route", "GET", "/admin", {}),
        ("static traversal", "GET", "/ui/static/../../../etc/passwd", {}),
        ("encoded static traversal", "GET", "/ui/static/%2e%2e/%2e%2e/etc/passwd", {}),
        ("dot-dot route", "GET", "/v1/../../etc/passwd", {}),
    ]
    return cases


@pytest.fixture(scope="module")
def keyed_app(settings, model_version, base_dir, redis_url):
    """The API with a user and an admin key, small body limits, on a Redis database of its own."""
    db_url = re.sub(r"/\d+$", "/10", redis_url)
    app = create_app(settings.replace(
        redis_url=db_url, admin_keys=f"root:{hash_key(ADMIN)}",
        api_keys=f"alice:{hash_key(USER)},carol:{hash_key(SCOPED)}:{base_dir}/scoped;"
                 "s3://facesense-test/scoped",
        max_json_bytes=64 << 10, max_form_parts=50, url_max_per_job=10))
    yield app
    redis.Redis.from_url(db_url).flushdb()


def test_the_hostile_request_set_gets_no_5xx_and_only_json_errors(keyed_app, base_dir):
    client = keyed_app.test_client()
    cases = hostile_requests(str(base_dir))
    statuses, bad = [], []
    for name, method, path, kwargs in cases:
        kwargs = {"headers": bearer(), **kwargs}
        resp = client.open(path, method=method, **kwargs)
        statuses.append((name, resp.status_code))
        if resp.status_code >= 500:
            bad.append((name, resp.status_code, resp.get_data(as_text=True)[:200]))
        elif resp.status_code >= 400:
            body = resp.get_json(silent=True) if resp.mimetype == "application/json" else None
            error = (body or {}).get("error") or {}
            if not (error.get("code") and error.get("message")):
                bad.append((name, resp.status_code, resp.mimetype, resp.get_data(as_text=True)[:200]))
    print(f"{len(cases)} hostile requests: {sum(s >= 500 for _, s in statuses)} x 5xx, "
          f"{sum(400 <= s < 500 for _, s in statuses)} x 4xx")
    assert not bad, bad
    assert len(cases) >= 90
    # none of them was accepted as a job
    assert not [n for n, s in statuses if s == 202], statuses
