"""The private Redis of `facesense up`: a password kept in its data dir, files only its owner reads."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from cli.launcher import start_redis, stop


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def private_redis(tmp_path):
    """start_redis on a fresh data dir under the usual umask; yields (proc, url, data dir)."""
    old = os.umask(0o022)
    try:
        proc, url = start_redis(tmp_path / "redis")
    finally:
        os.umask(old)
    yield proc, url, tmp_path / "redis"
    stop([proc])


def test_a_client_without_the_password_is_refused(private_redis):
    proc, url, _ = private_redis
    parts = urlsplit(url)
    assert parts.password and len(parts.password) >= 32
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(host=parts.hostname, port=parts.port).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(host=parts.hostname, port=parts.port, password="guess").ping()
    assert redis.Redis.from_url(url).ping()
    # the password is not on the command line, which every local user can read in ps
    assert parts.password.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()


def test_the_data_dir_and_every_file_in_it_are_private(private_redis):
    _, url, data = private_redis
    r = redis.Redis.from_url(url)
    r.set("face", "scores")
    r.execute_command("BGREWRITEAOF")  # the AOF written out, as after a busy day
    assert mode(data) == 0o700
    assert mode(data / "password") == 0o600
    files = [p for p in data.rglob("*") if p.is_file()]
    assert any("aof" in p.name for p in files), files
    for p in files:
        assert mode(p) & 0o077 == 0, (p, oct(mode(p)))


def test_the_password_and_the_data_survive_a_restart(tmp_path):
    proc, url = start_redis(tmp_path / "redis")
    redis.Redis.from_url(url).set("kept", "yes")
    stop([proc])  # SIGTERM: Redis flushes its append-only file
    proc, again = start_redis(tmp_path / "redis")
    try:
        assert again == url.replace(f":{urlsplit(url).port}/", f":{urlsplit(again).port}/")
        assert redis.Redis.from_url(again).get("kept") == b"yes"
    finally:
        stop([proc])


def test_a_data_dir_left_open_by_an_older_version_is_closed(tmp_path):
    data = tmp_path / "redis"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    (data / "appendonly.aof").write_bytes(b"")
    os.chmod(data / "appendonly.aof", 0o644)
    proc, _ = start_redis(data)
    stop([proc])
    assert mode(data) == 0o700
    assert mode(data / "appendonly.aof") & 0o077 == 0
