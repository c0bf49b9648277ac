"""Settings: built once from FACESENSE_* variables, with typed parsing and help on every field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from facesense.errors import ConfigError
from facesense.settings import Settings, describe


def test_from_env_parses_ints_roots_and_strings():
    s = Settings.from_env({
        "FACESENSE_SHARD_SIZE": "1_024",
        "FACESENSE_API_PORT": "9000",
        "FACESENSE_MAX_ZIP_MEMBERS": "2_000_000",
        "FACESENSE_ALLOWED_ROOTS": "/data/a:/data/b::/mnt/c",
        "FACESENSE_STORE": "s3://bucket/prefix",
        "FACESENSE_DEVICE": "cuda:1",
    })
    assert s.shard_size == 1024
    assert s.api_port == 9000
    assert s.max_zip_members == 2_000_000
    assert s.allowed_roots == ("/data/a", "/data/b", "/mnt/c")
    assert s.store == "s3://bucket/prefix"
    assert s.device == "cuda:1"


def test_unset_variables_keep_their_defaults_and_others_are_ignored():
    s = Settings.from_env({"FACESENSE_SHARD_SIZE": "8", "OTHER_SHARD_SIZE": "9",
                           "facesense_batch_size": "7"})
    assert s == Settings(shard_size=8)


def test_from_env_reads_the_process_environment_by_default(monkeypatch):
    monkeypatch.setenv("FACESENSE_BATCH_SIZE", "48")
    monkeypatch.setenv("FACESENSE_LOG_LEVEL", "DEBUG")
    s = Settings.from_env()
    assert (s.batch_size, s.log_level) == (48, "DEBUG")


@pytest.mark.parametrize("raw", ["lots", "1.5", "", "0x10", "12 MB"])
def test_a_bad_int_raises_config_error_naming_the_variable(raw):
    with pytest.raises(ConfigError, match="FACESENSE_SHARD_SIZE") as info:
        Settings.from_env({"FACESENSE_SHARD_SIZE": raw})
    assert repr(raw) in str(info.value)


def test_overrides_win_over_the_environment():
    s = Settings.from_env({"FACESENSE_REDIS_URL": "redis://env:6379/0",
                           "FACESENSE_SHARD_SIZE": "not-a-number"},
                          redis_url="redis://override:6379/0", shard_size=7)
    assert s.redis_url == "redis://override:6379/0"
    assert s.shard_size == 7


def test_env_round_trips_through_from_env():
    s = Settings(redis_url="redis://h:1/2", store="s3://b/p", allowed_roots=("/a", "/b c"),
                 shard_size=3, batch_size=5, api_port=1234, device="cpu", s3_region="eu-west-1")
    env = s.env()
    assert set(env) == {name for name, _, _ in describe()}
    assert all(isinstance(v, str) for v in env.values())
    assert env["FACESENSE_ALLOWED_ROOTS"] == "/a:/b c"
    assert Settings.from_env(env) == s


def test_defaults_round_trip_through_env():
    assert Settings.from_env(Settings().env()) == Settings()


def test_every_field_has_help_text():
    fields = dataclasses.fields(Settings)
    for f in fields:
        assert f.metadata.get("help", "").strip(), f"{f.name} has no help text"
    rows = describe()
    assert [r[0] for r in rows] == ["FACESENSE_" + f.name.upper() for f in fields]
    assert len(rows) == len(fields)
    assert all(help.strip() for _, _, help in rows)


def test_variable_names_are_the_prefixed_field_names():
    names = [name for name, _, _ in describe()]
    assert "FACESENSE_REDIS_URL" in names and "FACESENSE_ALLOWED_ROOTS" in names
    assert all(n.startswith("FACESENSE_") and n.isupper() for n in names)


def test_settings_are_frozen_and_replace_makes_a_copy():
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.shard_size = 1  # type: ignore[misc]
    t = s.replace(shard_size=1)
    assert (s.shard_size, t.shard_size) == (256, 1)


def test_store_url_defaults_to_a_folder_under_the_data_dir():
    assert Settings(data_dir="/srv/fs").store_url == str(Path("/srv/fs") / "store")
    assert Settings(data_dir="/srv/fs", store="s3://b/p").store_url == "s3://b/p"


def test_roots_default_to_none_and_are_resolved(tmp_path, monkeypatch):
    # Unset, no local folder may be read: not the working directory, which holds ./var
    monkeypatch.chdir(tmp_path)
    assert Settings().roots == ()
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert Settings(allowed_roots=(str(tmp_path / "link"),)).roots == ((tmp_path / "real")
                                                                      .resolve(),)


def test_client_api_url_defaults_to_host_and_port():
    assert Settings(api_host="0.0.0.0", api_port=81).client_api_url == "http://0.0.0.0:81"
    assert Settings(api_url="https://fs.example/").client_api_url == "https://fs.example"
