"""Image URLs as a job source, and the SSRF guard every URL fetch goes through."""

from __future__ import annotations

import ipaddress
import random
import socket
import time

import pytest

from api import create_app
from facesense.errors import BadRequest, ConfigError, PayloadTooLarge
from facesense.inputs.keys import group_of
from facesense.inputs.netguard import FetchError, Limits, Refused, allowed_networks, fetch, is_blocked, vet
from facesense.inputs.urls import save_url_list, split_url_key, url_item_key
from facesense.settings import Settings
from facesense.storage import LocalStore
from tests.conftest import wait_for_job
from tests.imagegen import encode, make_image
from tests.loopback import Loopback, redirect, respond, stall, trickle

FACE = encode(make_image(random.Random(7), (120, 90)), "JPEG")
LOOPBACK = allowed_networks("127.0.0.1/32")


@pytest.fixture(scope="module")
def server():
    """One scripted loopback server for the whole module."""
    with Loopback() as srv:
        srv.routes.update({
            "/face.jpg": respond(200, FACE, {"Content-Type": "image/jpeg"}),
            "/text.jpg": respond(200, b"<html>not an image</html>"),
            "/big": respond(200, b"x" * 6000),
            "/big-unsized": respond(200, b"x" * 6000, length=False),
            "/slow": trickle(10),
            "/stall": stall(10),
            "/to-face": redirect("/face.jpg"),
            "/to-metadata": redirect("http://169.254.169.254/latest/meta-data/"),
            "/to-other-loopback": redirect(srv.url("/face.jpg", host="127.0.0.2"), 307),
            "/to-ftp": redirect("ftp://127.0.0.1/face.jpg"),
            "/loop": redirect("/loop"),
            "/echo-host": lambda h: respond(200, h.headers["Host"].encode())(h),
        })
        yield srv


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
    "100.64.0.1", "0.0.0.0", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
    "::1", "::", "fd00::1", "fe80::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
    "2002:7f00:1::1", "64:ff9b::a9fe:a9fe"])
def test_inner_addresses_are_blocked(address):
    assert is_blocked(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700::1111"])
def test_public_addresses_pass(address):
    assert not is_blocked(ipaddress.ip_address(address))


def test_allowed_networks_override_the_rules_only_for_themselves():
    allow = allowed_networks(" 127.0.0.1/32 , 10.0.0.0/8")
    assert not is_blocked(ipaddress.ip_address("127.0.0.1"), allow)
    assert not is_blocked(ipaddress.ip_address("10.9.8.7"), allow)
    assert is_blocked(ipaddress.ip_address("127.0.0.2"), allow)
    assert is_blocked(ipaddress.ip_address("169.254.169.254"), allow)
    assert allowed_networks("") == ()
    with pytest.raises(ConfigError, match="FACESENSE_URL_ALLOW_NETWORKS"):
        allowed_networks("10.0.0.0/99")


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://127.0.0.1/face.jpg", "scheme not allowed: ftp"),
    ("file:///etc/passwd", "scheme not allowed: file"),
    ("http://localhost/face.jpg", "blocked address 127.0.0.1"),  # checked after resolution
    ("http://169.254.169.254/latest/meta-data/", "blocked address 169.254.169.254"),
    ("http://2130706433/", "blocked address 127.0.0.1"),  # 127.0.0.1 spelled as one number
    ("http://0x7f.1/", "blocked address 127.0.0.1"),
    ("http://[::1]:8080/", "blocked address ::1"),
    ("http://[::ffff:a9fe:a9fe]/", "blocked address ::ffff:a9fe:a9fe"),
    ("http://:80/x", "bad URL: no host"),
    ("http://host:notaport/", "bad URL"),
])
def test_vet_refuses_schemes_and_inner_hosts(url, reason):
    with pytest.raises(Refused) as e:
        vet(url)
    assert str(e.value) == reason


def test_loopback_is_refused_by_default_before_any_connection(server):
    with pytest.raises(Refused, match=r"^blocked address 127\.0\.0\.1$"):
        fetch(server.url("/face.jpg?default"), Limits(max_bytes=10_000))
    assert server.requests_to("/face.jpg") == []


def test_an_allowed_loopback_server_is_fetched_through_redirects(server):
    limits = Limits(max_bytes=10_000, allow=LOOPBACK)
    assert fetch(server.url("/face.jpg"), limits) == FACE
    assert fetch(server.url("/to-face"), limits) == FACE


def test_the_vetted_address_is_used_not_resolved_again(server, monkeypatch):
    """DNS rebinding: a second lookup would answer the metadata address; there is none."""
    answers = iter(["127.0.0.1", "169.254.169.254", "169.254.169.254"])
    lookups = []

    def rebinding(host, port, *args, **kwargs):
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    limits = Limits(max_bytes=10_000, allow=LOOPBACK)
    assert fetch(server.url("/echo-host", host="rebind.test"), limits) == \
        f"rebind.test:{server.port}".encode()  # the URL's host in Host, the vetted IP dialled
    assert lookups == ["rebind.test"]


@pytest.mark.parametrize(("path", "reason"), [
    ("/missing", "http 404"),
    ("/big", "too large: over 5000 bytes"),
    ("/big-unsized", "too large: over 5000 bytes"),
    ("/to-metadata", "blocked address 169.254.169.254"),
    ("/to-other-loopback", "blocked address 127.0.0.2"),
    ("/to-ftp", "scheme not allowed: ftp"),
    ("/loop", "too many redirects (over 5)"),
    ("/slow", "timed out"),
    ("/stall", "timed out"),
])
def test_each_failure_has_its_reason(server, path, reason):
    limits = Limits(max_bytes=5000, connect_timeout=1, timeout=1, allow=LOOPBACK)
    start = time.monotonic()
    with pytest.raises(FetchError) as e:
        fetch(server.url(path), limits)
    assert str(e.value) == reason
    # the 1 s limit holds, trickle or stall: far sooner than the routes' 10 s (a bound this
    # loose never flakes on a loaded machine, and a limit not held still fails it)
    assert time.monotonic() - start < 6


def test_a_closed_port_is_refused_not_hung():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(FetchError, match=r"^connection refused$"):
        fetch(f"http://127.0.0.1:{port}/", Limits(max_bytes=10, allow=LOOPBACK))


def test_url_items_keep_their_group(tmp_path):
    bare = url_item_key("https://cdn.example.com/a.jpg?x=1", 0)
    named = url_item_key({"url": "https://cdn.example.com/a.jpg", "group": "variant_a"}, 1)
    assert split_url_key(bare) == ("cdn.example.com", "https://cdn.example.com/a.jpg?x=1")
    assert split_url_key(named) == ("variant_a", "https://cdn.example.com/a.jpg")
    assert group_of(bare) == "cdn.example.com" and group_of(named) == "variant_a"
    assert group_of("variant_a/img.jpg") == "variant_a"  # folder keys are unchanged
    for entry in ("cdn.example.com/a.jpg", "data:image/png;base64,AAAA", 42, "",
                  {"url": "https://x/a.jpg", "group": "a/b"}, {"url": "https://x", "size": 1}):
        with pytest.raises(BadRequest, match=r"urls\[3\]"):
            url_item_key(entry, 3)
    with pytest.raises(PayloadTooLarge, match="limit is 2"):
        save_url_list(["https://a/1", "https://a/2", "https://a/3"], LocalStore(tmp_path), "j",
                      Settings(url_max_per_job=2))


def test_bad_url_lists_are_400_or_413_at_submit(client, base_dir, settings, model_version):
    def post(body, c=client):
        return c.post("/v1/jobs", json={"type": "classify", **body})

    both = post({"source": str(base_dir), "urls": ["https://x/a.jpg"]})
    assert both.status_code == 400 and "exactly one" in both.get_json()["error"]["message"]
    assert post({"urls": []}).status_code == 400
    assert "urls (expected list)" in post({"urls": "https://x/a.jpg"}).get_json()["error"][
        "message"]
    relative = post({"urls": ["https://x/a.jpg", "/etc/passwd"]})
    assert relative.status_code == 400 and "urls[1]" in relative.get_json()["error"]["message"]
    small = create_app(settings.replace(url_max_per_job=1)).test_client()
    assert post({"urls": ["https://x/a.jpg", "https://x/b.jpg"]}, small).status_code == 413


def test_a_url_job_scores_allowed_urls_and_reports_every_other_one(client, worker, server):
    """End to end (API, Redis, S3, worker): each URL's exact outcome; the job succeeds."""
    cases = [  # (urls entry, image key, group, error or None for scored)
        (server.url("/face.jpg"), server.url("/face.jpg"), "127.0.0.1", None),
        ({"url": server.url("/face.jpg?b"), "group": "variant_b"},
         "variant_b/" + server.url("/face.jpg?b"), "variant_b", None),
        (server.url("/to-face"), server.url("/to-face"), "127.0.0.1", None),
        (server.url("/missing"), server.url("/missing"), "127.0.0.1", "http 404"),
        (server.url("/text.jpg"), server.url("/text.jpg"), "127.0.0.1", "not an image"),
        (server.url("/to-metadata"), server.url("/to-metadata"), "127.0.0.1",
         "blocked address 169.254.169.254"),
        (server.url("/face.jpg", host="127.0.0.2"), server.url("/face.jpg", host="127.0.0.2"),
         "127.0.0.2", "blocked address 127.0.0.2"),  # loopback outside the allowed network
        ("http://169.254.169.254/latest/meta-data/", "http://169.254.169.254/latest/meta-data/",
         "169.254.169.254", "blocked address 169.254.169.254"),
        ("ftp://127.0.0.1/face.jpg", "ftp://127.0.0.1/face.jpg", "127.0.0.1",
         "scheme not allowed: ftp"),
    ]
    resp = client.post("/v1/jobs", json={"type": "classify", "urls": [c[0] for c in cases]})
    assert resp.status_code == 202, resp.get_json()
    record = wait_for_job(client, resp.get_json()["id"])
    assert record["status"] == "succeeded", record
    assert record["progress"]["total"] == record["progress"]["done"] == len(cases)
    assert record["progress"]["failed"] == sum(1 for c in cases if c[3])
    rows = client.get(f"/v1/jobs/{record['id']}/results?limit=100").get_json()["rows"]
    assert [(r["image"], r["group"], r["error"]) for r in rows] == \
        [(key, group, error) for _, key, group, error in cases]
    assert all(r["label"] in ("happy", "sad") for r in rows if not r["error"])
    assert record["summary"]["groups"]["variant_b"]["images"] == 1
    # A retry fetches only the failed URLs again, through the same guard.
    retry = wait_for_job(client, client.post(f"/v1/jobs/{record['id']}/retry").get_json()["id"])
    again = client.get(f"/v1/jobs/{retry['id']}/results").get_json()["rows"]
    assert [(r["image"], r["error"]) for r in again] == [(k, e) for _, k, _, e in cases if e]
