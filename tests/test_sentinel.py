"""Redis through Sentinel: the settings, and a failover on real processes (a primary, a replica,
three sentinels, two scoring workers with their control workers, the API) in the worst case
asynchronous replication allows: the primary acknowledged writes the replica never received."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from cli.launcher import free_port
from facesense import redisconn
from facesense.errors import ConfigError
from facesense.settings import Settings
from facesense.state.records import JobRecords, public_record
from tests.sentinels import start_sentinels
from tests.stack import (
    FAST,
    Stack,
    assert_each_image_once,
    children,
    register_small_model,
    tiny_folder,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
IMAGES = 400  # per job: 8 shards of 50


def test_sentinels_replace_the_url_for_the_broker_and_every_client():
    s = Settings(redis_url="redis://elsewhere:6379/0", redis_sentinels="10.0.0.1:26379, s2:26380",
                 redis_password="pw")
    assert redisconn.sentinel_addresses(s) == [("10.0.0.1", 26379), ("s2", 26380)]
    url, options = redisconn.broker(s)
    assert url == "sentinel://:pw@10.0.0.1:26379/0;sentinel://:pw@s2:26380/0"
    assert options["master_name"] == "facesense" and "elsewhere" not in url
    assert redisconn.configured(Settings(redis_sentinels="s:1"))
    assert "pw" not in repr(s)  # the password is masked where settings are logged
    with pytest.raises(ConfigError, match="not host:port"):
        redisconn.sentinel_addresses(s.replace(redis_sentinels="s1:26379,s2"))


def test_the_compose_sentinel_layout_names_its_own_sentinels_and_real_settings():
    base = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    layout = yaml.safe_load((ROOT / "docker-compose.sentinel.yml").read_text())["services"]
    for name in ("api", "worker", "trainer"):  # every client of Redis follows the sentinels
        env = layout[name]["environment"]
        assert set(env) <= set(Settings().env()) and name in base
        hosts = [host for host, _ in redisconn.sentinel_addresses(Settings(
            redis_sentinels=env["FACESENSE_REDIS_SENTINELS"]))]
        assert len(hosts) == 3 and set(hosts) <= set(layout)
        for host in hosts:  # each monitors the base's redis service, quorum 2 of 3
            assert f"sentinel monitor {env['FACESENSE_REDIS_SENTINEL_MASTER']} redis 6379 2" in \
                layout[host]["command"][0]
    assert "redis" in base and "--replicaof redis 6379" in layout["redis-replica"]["command"][0]


def test_facesense_up_finds_redis_through_the_sentinels_and_starts_none_of_its_own(tmp_path):
    group = start_sentinels(tmp_path / "redis")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESENSE_")}
    env.update(FACESENSE_DATA_DIR=str(tmp_path / "var"), FACESENSE_API_PORT=str(port),
               FACESENSE_STORE=str(tmp_path / "store"), FACESENSE_REDIS_SENTINELS=group.addresses,
               FACESENSE_REDIS_PASSWORD=group.password)
    log = tmp_path / "up.log"
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--workers", "0"], cwd=ROOT,
                            env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)

    def health() -> dict | None:
        assert proc.poll() is None, log.read_text()
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
        except requests.ConnectionError:
            return None

    try:
        assert wait_until(health, 60, "the API")["redis"] == "ok"  # the sentinels' primary
        assert children(proc.pid) == []  # no private redis-server beside the API
        assert not (tmp_path / "var" / "redis").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        group.stop()


@pytest.mark.slow
def test_both_jobs_finish_each_image_once_when_the_primary_dies_with_unreplicated_writes(tmp_path):
    # Given a Sentinel group, two scoring workers (each with its control worker) and the API
    group = start_sentinels(tmp_path / "redis")
    settings = Settings(redis_sentinels=group.addresses, redis_password=group.password,
                        store=str(tmp_path / "store"), allowed_roots=(str(tmp_path),),
                        data_dir=str(tmp_path / "var"), precision="fp32", **FAST)
    stack = Stack(tmp_path, settings, None)
    try:
        register_small_model(settings)
        stack.start_workers(2)
        keys = {name: tiny_folder(tmp_path / name, IMAGES) for name in ("job1", "job2")}
        ids = {name: stack.submit(tmp_path / name) for name in keys}

        def counted(get=stack.job) -> int | None:
            """Images counted over both jobs, as the API says (None while it can't say)."""
            try:
                return sum(get(i)["progress"]["done"] for i in ids.values())
            except (KeyError, TypeError):  # an error body: Redis is away
                return None

        # and both jobs being scored
        wait_until(lambda: all(stack.job(i)["progress"]["done"] >= 50 for i in ids.values()),
                   90, "both jobs to count a shard")
        # When the link to the replica is cut and the primary acknowledges more counts...
        group.cut_replication()
        tiny_folder(tmp_path / "unconfirmed", 5)
        refused = stack.api.post("/v1/jobs", json={"type": "classify",
                                                   "source": str(tmp_path / "unconfirmed")})
        # (a submission no replica confirmed is refused: the one loss no worker could redo)
        assert refused.status_code == 503, refused.get_json()
        assert "no replica" in refused.get_json()["error"]["message"]
        records = JobRecords(group.node("replica"), None)  # read directly: it serves stale reads
        replica = lambda job_id: public_record(records.get(job_id))  # noqa: E731
        cut = counted()
        seen = wait_until(lambda: (n := counted()) and n >= cut + 50 and n, 30,
                          "a shard counted that the replica never receives")
        after = counted(replica)  # what the replica holds, frozen since the cut
        # ...then the primary is SIGKILLed
        group.primary.kill()
        killed = time.monotonic()
        group.primary.wait()
        # Then Sentinel promotes the replica, which lacks those counts
        wait_until(lambda: group.master_port() == group.ports["replica"], 30, "the promotion")
        promoted = time.monotonic() - killed
        assert after < seen  # the worst case happened: acknowledged counts were lost
        # and the workers, their control workers and the API reconnect by themselves
        wait_until(lambda: (counted() or 0) > after, 60, "a shard counted after failover")
        first_count = time.monotonic() - killed
        for name, job_id in ids.items():
            record = stack.wait(job_id, 120)
            assert record["status"] == "succeeded", record
            assert record["progress"]["done"] == IMAGES and record["progress"]["failed"] == 0
            assert_each_image_once(stack.rows(job_id), keys[name])  # none lost, none twice
        assert len(stack.alive()) == 2  # no worker crashed
        probe = subprocess.run([sys.executable, "-m", "facesense.redisconn"], cwd=ROOT,
                               env={**os.environ, **settings.env()}, capture_output=True,
                               text=True, timeout=30)
        assert probe.returncode == 0, probe.stderr  # the control workers' probe follows too
        figures = {"promoted_s": round(promoted, 2), "first_count_after_kill_s": round(first_count, 2),
                   "images_counted_then_lost": seen - after, "images_lost": 0, "images_duplicated": 0}
        print("failover:", json.dumps(figures))
    finally:
        stack.stop_workers()
        group.stop()


def test_the_probe_says_why_when_no_sentinel_answers():
    env = {**os.environ, "FACESENSE_REDIS_SENTINELS": "127.0.0.1:1", "FACESENSE_REDIS_URL": ""}
    probe = subprocess.run([sys.executable, "-m", "facesense.redisconn"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=30)
    assert probe.returncode == 1 and "sentinels 127.0.0.1:1" in probe.stderr, probe.stderr
