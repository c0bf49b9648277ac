"""The model registry on a local store, torch-free: weights are arbitrary bytes."""

from __future__ import annotations

import hashlib
import json

import pytest

from facesense.errors import BadRequest, Conflict, ModelError, ModelNotFound
from facesense.registry import DEFAULT_PREPROCESS, NAME_RE, Registry, validate_manifest
from facesense.storage import LocalStore

WEIGHTS = b"\x00fake-safetensors\xff" * 100
MANIFEST = {"classes": ["happy", "sad"], "arch": "alexnet"}


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path)


@pytest.fixture
def registry(store) -> Registry:
    return Registry(store)


def test_register_writes_weights_and_manifest_with_checksum(registry, store):
    manifest = registry.register(WEIGHTS, MANIFEST, version="v1")
    assert manifest["version"] == "v1"
    assert manifest["weights_sha256"] == hashlib.sha256(WEIGHTS).hexdigest()
    assert manifest["weights_bytes"] == len(WEIGHTS)
    assert manifest["classes"] == ["happy", "sad"] and manifest["arch"] == "alexnet"
    assert manifest["preprocess"] == DEFAULT_PREPROCESS
    assert store.get("models/v1/weights.safetensors") == WEIGHTS
    assert json.loads(store.get("models/v1/manifest.json")) == manifest
    assert registry.manifest("v1") == manifest


def test_register_without_a_name_makes_a_valid_version_name(registry):
    manifest = registry.register(WEIGHTS, MANIFEST)
    assert manifest["version"].startswith("v") and NAME_RE.match(manifest["version"])
    assert registry.resolve(manifest["version"]) == manifest


def test_registering_the_same_version_twice_is_a_conflict(registry, store):
    registry.register(WEIGHTS, MANIFEST, version="v1")
    with pytest.raises(Conflict, match="immutable"):
        registry.register(b"other weights", MANIFEST, version="v1")
    assert store.get("models/v1/weights.safetensors") == WEIGHTS


@pytest.mark.parametrize("name", ["../x", "a/b", "-lead", "x" * 65, "sp ace", "aliases"])
def test_register_refuses_unsafe_or_reserved_version_names(registry, store, name):
    with pytest.raises(BadRequest):
        registry.register(WEIGHTS, MANIFEST, version=name)
    assert list(store.list()) == []


@pytest.mark.parametrize("classes", [None, [], ["happy"], ["happy", "happy"], ["happy", ""],
                                     ["happy", 3], "happy,sad"])
def test_validate_manifest_rejects_bad_class_lists(classes):
    with pytest.raises(ModelError, match="2 distinct"):
        validate_manifest({"classes": classes})


@pytest.mark.parametrize("preprocess", [{"input_size": 32}, {"input_size": 224, "resize_size": 200},
                                        {"mean": [0.5, 0.5]}, {"std": [0.2, 0.0, 0.2]}])
def test_validate_manifest_rejects_bad_preprocessing(preprocess):
    with pytest.raises(ModelError):
        validate_manifest({"classes": ["a", "b"], "preprocess": preprocess})


def test_validate_manifest_fills_preprocessing_defaults():
    out = validate_manifest({"classes": ["a", "b", "c"], "preprocess": {"input_size": 128,
                                                                        "resize_size": 144}})
    assert out["preprocess"] == {**DEFAULT_PREPROCESS, "input_size": 128, "resize_size": 144}
    assert out["classes"] == ["a", "b", "c"]


def test_register_with_a_bad_manifest_writes_nothing(registry, store):
    with pytest.raises(ModelError):
        registry.register(WEIGHTS, {"classes": ["only"]}, version="v1")
    assert list(store.list()) == []


# --- resolve and promote ------------------------------------------------------------------


def test_resolve_by_version_and_by_alias(registry):
    v1 = registry.register(WEIGHTS, MANIFEST, version="v1")
    registry.promote("v1", "production", by="alice")
    assert registry.resolve("v1") == v1
    assert registry.resolve("production") == v1


def test_alias_and_version_names_never_collide(registry):
    # An alias named like a version would hand every job (and retry) naming that version
    # another model: refused both ways.
    registry.register(WEIGHTS, MANIFEST, version="v1")
    registry.register(WEIGHTS + b"2", MANIFEST, version="v2")
    with pytest.raises(Conflict, match="would hide the model version"):
        registry.promote("v2", "v1")
    assert registry.alias("v1") is None and registry.resolve("v1")["version"] == "v1"
    registry.promote("v2", "staging")
    with pytest.raises(Conflict, match="is an alias name"):
        registry.register(WEIGHTS + b"3", MANIFEST, version="staging")


def test_a_version_that_does_not_beat_chance_moves_an_alias_only_with_force(registry):
    chance = {"baseline": 0.5, "correct": 3, "images": 6, "p_value": 0.656, "alpha": 0.05,
              "beats_chance": False}
    registry.register(WEIGHTS, {**MANIFEST, "chance": chance}, version="coin")
    with pytest.raises(Conflict, match="does not beat chance"):
        registry.promote("coin", "production")
    assert registry.alias("production") is None
    record = registry.promote("coin", "production", by="ops", force=True)
    assert record["history"][-1]["forced"] is True and record["version"] == "coin"
    registry.register(WEIGHTS, {**MANIFEST, "chance": {**chance, "beats_chance": True}},
                      version="good")
    assert "forced" not in registry.promote("good", "production")["history"][-1]


@pytest.mark.parametrize("name", ["v9", "staging", "../x", ""])
def test_resolve_unknown_raises_model_not_found(registry, name):
    with pytest.raises(ModelNotFound):
        registry.resolve(name)


def test_resolve_missing_production_hints_how_to_get_a_model(registry):
    with pytest.raises(ModelNotFound) as info:
        registry.resolve("production")
    message = str(info.value)
    assert "no model has been promoted" in message
    assert "facesense models import" in message and "--promote" in message
    with pytest.raises(ModelNotFound) as other:
        registry.resolve("staging")
    assert "promoted" not in str(other.value)


def test_promote_records_every_alias_move(registry, store):
    registry.register(WEIGHTS, MANIFEST, version="v1")
    registry.register(WEIGHTS + b"2", MANIFEST, version="v2")
    registry.promote("v1", "production", by="alice")
    record = registry.promote("v2", "production", by="bob")
    assert record["version"] == "v2"
    moves = [{k: h[k] for k in ("from", "to", "by")} for h in record["history"]]
    assert moves == [{"from": None, "to": "v1", "by": "alice"},
                     {"from": "v1", "to": "v2", "by": "bob"}]
    assert record["history"][0]["at"] <= record["history"][1]["at"]
    assert json.loads(store.get("models/aliases/production.json")) == record
    assert registry.alias("production") == record
    assert registry.resolve("production")["version"] == "v2"


def test_promote_of_an_unknown_version_leaves_the_alias_alone(registry):
    registry.register(WEIGHTS, MANIFEST, version="v1")
    registry.promote("v1", "production")
    with pytest.raises(ModelNotFound):
        registry.promote("v404", "production")
    assert registry.resolve("production")["version"] == "v1"
    assert len(registry.alias("production")["history"]) == 1


def test_promote_refuses_an_unsafe_alias_name(registry, store):
    registry.register(WEIGHTS, MANIFEST, version="v1")
    with pytest.raises(BadRequest):
        registry.promote("v1", "../evil")
    assert list(store.list("models/aliases")) == []


# --- weights, listings --------------------------------------------------------------------


def test_weights_returns_the_verified_bytes(registry):
    manifest = registry.register(WEIGHTS, MANIFEST, version="v1")
    assert registry.weights(manifest) == WEIGHTS


def test_weights_with_a_tampered_file_raise_model_error(registry, store):
    manifest = registry.register(WEIGHTS, MANIFEST, version="v1")
    store.put("models/v1/weights.safetensors", WEIGHTS[:-1] + b"!")
    with pytest.raises(ModelError, match="checksum"):
        registry.weights(manifest)


def test_versions_are_listed_newest_first(registry):
    for name, created in [("v-old", 100.0), ("v-new", 300.0), ("v-mid", 200.0)]:
        registry.register(WEIGHTS, {**MANIFEST, "created_at": created}, version=name)
    assert [m["version"] for m in registry.versions()] == ["v-new", "v-mid", "v-old"]


def test_versions_registered_later_come_first(registry):
    names = ["b-first", "a-second", "c-third"]
    for name in names:
        registry.register(WEIGHTS, MANIFEST, version=name)
    assert [m["version"] for m in registry.versions()] == names[::-1]


def test_versions_and_aliases_of_an_empty_registry(registry):
    assert registry.versions() == []
    assert registry.aliases() == {}
    assert registry.alias("production") is None


def test_aliases_lists_every_alias_record(registry):
    registry.register(WEIGHTS, MANIFEST, version="v1")
    registry.register(WEIGHTS + b"2", MANIFEST, version="v2")
    registry.promote("v1", "production", by="ci")
    registry.promote("v2", "staging", by="ci")
    aliases = registry.aliases()
    assert set(aliases) == {"production", "staging"}
    assert aliases["production"]["version"] == "v1"
    assert aliases["staging"]["version"] == "v2"
    # Aliases are not versions.
    assert [m["version"] for m in registry.versions()] == ["v2", "v1"]


def test_listing_versions_reads_each_manifest_once_and_never_lists_weights(store):
    writer = Registry(store)
    for i in range(5):
        writer.register(WEIGHTS, MANIFEST, version=f"v{i}")
    store.put("models/half/weights.safetensors", WEIGHTS)  # being written: no manifest yet
    gets, lists = [], []

    class Counting(LocalStore):
        def get(self, key):
            gets.append(key)
            return super().get(key)

        def list(self, prefix=""):
            lists.append(prefix)
            return super().list(prefix)

    reader = Registry(Counting(store.root))
    first = [m["version"] for m in reader.versions()]
    assert sorted(first) == [f"v{i}" for i in range(5)]  # the half-written one is left out
    assert not any(k.endswith("weights.safetensors") for k in gets) and lists == []
    reads = len(gets)
    assert [m["version"] for m in reader.versions()] == first
    assert len(gets) == reads + 1  # again: only the manifest that is still missing is retried
