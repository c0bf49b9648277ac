"""The model registry: immutable versions (weights + manifest) and aliases that move, in storage."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid

from facesense.errors import BadRequest, Conflict, ModelError, ModelNotFound, ObjectNotFound
from facesense.storage import Store
from facesense.storage.layout import ALIASES, MODELS, WEIGHTS, alias_key, version_key

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# The preprocessing a version expects unless its manifest says otherwise (ImageNet AlexNet's).
RESIZE_RATIO = 8 / 7  # shorter side resized to this times the input side, then centre-cropped


def resize_for(input_size: int) -> int:
    """The shorter side images are resized to before cropping (224 -> 256, as ImageNet)."""
    return round(input_size * RESIZE_RATIO)


DEFAULT_PREPROCESS = {"input_size": 224, "resize_size": resize_for(224),
                      "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def new_version_id() -> str:
    """A sortable, unique version name: v<UTC time>-<random>."""
    return time.strftime("v%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def sha256(data: bytes) -> str:
    """Hex SHA-256 of some bytes."""
    return hashlib.sha256(data).hexdigest()


def check_name(name: str, what: str = "model") -> str:
    """Version and alias names are short and path-safe."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadRequest(f"invalid {what} name {name!r}: letters, digits, '.', '_', '-' only")
    return name


def validate_manifest(manifest: dict) -> dict:
    """Check a manifest's required fields; returns it with preprocessing defaults filled in."""
    classes = manifest.get("classes")
    if (not isinstance(classes, list) or len(classes) < 2
            or not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes)):
        raise ModelError("a model needs at least 2 distinct, non-empty class names")
    pre = {**DEFAULT_PREPROCESS, **manifest.get("preprocess", {})}
    if not (isinstance(pre["input_size"], int) and 63 <= pre["input_size"] <= 1024
            and isinstance(pre["resize_size"], int) and pre["resize_size"] >= pre["input_size"]):
        raise ModelError(f"bad preprocessing sizes: {pre}")
    if len(pre["mean"]) != 3 or len(pre["std"]) != 3 or min(pre["std"]) <= 0:
        raise ModelError("mean and std need 3 values each, std positive")
    if not isinstance(pre.get("grayscale", False), bool):
        raise ModelError("preprocess.grayscale must be true or false")
    return {**manifest, "preprocess": pre}


class Registry:
    """Versions live at models/<version>/; aliases at models/aliases/<alias>.json with history."""

    def __init__(self, store: Store, cached: int = 4096):
        self.store, self.cached = store, cached
        self._manifests: dict[str, dict] = {}  # versions are immutable: a manifest read is kept
        self._lock = threading.Lock()

    def register(self, weights: bytes, manifest: dict, version: str | None = None,
                 files: dict[str, bytes] | None = None) -> dict:
        """Store a new immutable version; the manifest is written last, so it marks completion."""
        version = check_name(version or new_version_id())
        if version == "aliases":  # models/aliases/ holds the alias records
            raise BadRequest("'aliases' is reserved and can't name a model version")
        if self.store.exists(version_key(version)):
            raise Conflict(f"model version {version!r} already exists; versions are immutable")
        if self.store.exists(alias_key(version)):  # jobs naming it would get the alias's model
            raise Conflict(f"{version!r} is an alias name; a version can't take it")
        manifest = validate_manifest({**manifest, "version": version,
                                      "weights_sha256": sha256(weights),
                                      "weights_bytes": len(weights),
                                      "created_at": manifest.get("created_at") or time.time()})
        self.store.put(version_key(version, WEIGHTS), weights)
        for name, data in (files or {}).items():  # e.g. history.json
            self.store.put(version_key(version, check_name(name, 'file')), data)
        self.store.put(version_key(version), json.dumps(manifest, indent=2).encode())
        return manifest

    def manifest(self, version: str) -> dict:
        """A version's manifest (read from the store once per process)."""
        if version in self._manifests:
            return self._manifests[version]
        try:
            manifest = json.loads(self.store.get(version_key(check_name(version))))
        except (ObjectNotFound, BadRequest):
            raise ModelNotFound(f"no model version {version!r}") from None
        with self._lock:  # threaded API: evict under a lock
            if len(self._manifests) >= self.cached:
                self._manifests.pop(next(iter(self._manifests)), None)
            self._manifests[version] = manifest
        return manifest

    def weights(self, manifest: dict) -> bytes:
        """A version's weights, verified against the manifest's checksum."""
        data = self.store.get(version_key(manifest['version'], WEIGHTS))
        if sha256(data) != manifest["weights_sha256"]:
            raise ModelError(f"model {manifest['version']}: weights checksum mismatch "
                             "(corrupt or tampered file)")
        return data

    def file(self, version: str, name: str) -> bytes | None:
        """One of a version's extra files (e.g. history.json), or None."""
        try:
            return self.store.get(version_key(check_name(version), check_name(name, "file")))
        except ObjectNotFound:
            return None

    def alias(self, alias: str) -> dict | None:
        """An alias record {alias, version, history}, or None."""
        try:
            return json.loads(self.store.get(alias_key(check_name(alias, 'alias'))))
        except ObjectNotFound:
            return None

    def resolve(self, name: str) -> dict:
        """The manifest an alias or version names (aliases win, as jobs mostly name aliases)."""
        try:
            check_name(name)
        except BadRequest:
            raise ModelNotFound(f"no model version or alias {name!r}") from None
        record = self.alias(name)
        if record:
            return self.manifest(record["version"])
        try:
            return self.manifest(name)
        except ModelNotFound:
            hint = (" (no model has been promoted yet: train one, or register one with "
                    "`facesense models import WEIGHTS --classes a,b --promote`)"
                    if name == "production" else "")
            raise ModelNotFound(f"no model version or alias {name!r}{hint}") from None

    def promote(self, version: str, alias: str = "production", by: str = "",
                force: bool = False) -> dict:
        """Point an alias at a version, recording the move in the alias's history.

        A version whose manifest says it does not beat chance moves an alias only with force,
        and the history says it was forced.
        """
        manifest = self.manifest(version)  # must exist
        check_name(alias, "alias")
        if self.store.exists(version_key(alias)):  # else naming that version finds the alias
            raise Conflict(f"alias {alias!r} would hide the model version of that name; "
                           "choose another alias name")
        chance = manifest.get("chance") or {}
        forced = bool(chance) and not chance.get("beats_chance")
        if forced and not force:
            raise Conflict(f"model {version} does not beat chance on its validation images "
                           f"(accuracy {chance['correct']}/{chance['images']}, majority class "
                           f"{chance['baseline']:.0%}, p = {chance['p_value']:.3g}); promote it "
                           "with force to put it behind an alias anyway")
        record = self.alias(alias) or {"alias": alias, "version": None, "history": []}
        record["history"].append({"at": time.time(), "from": record["version"], "to": version,
                                  "by": by, **({"forced": True, "beats_chance": False}
                                               if forced else {})})
        record["version"] = version
        self.store.put(alias_key(alias), json.dumps(record, indent=2).encode())
        return record

    def delete(self, version: str) -> int:
        """Remove a version's files (the manifest first, so it stops resolving at once);
        Conflict while an alias points at it. Returns the objects removed. The caller checks
        that no queued or running job names it."""
        manifest = self.manifest(version)  # must exist; 'aliases' never does
        self.check_unaliased(version)
        self.store.delete(version_key(manifest["version"]))
        with self._lock:
            self._manifests.pop(version, None)
        keys = list(self.store.list(f"{MODELS}/{version}"))
        for key in keys:
            self.store.delete(key)
        return len(keys) + 1

    def check_unaliased(self, version: str) -> None:
        """Conflict naming the aliases that point at a version, if any do."""
        using = sorted(n for n, a in self.aliases().items() if a["version"] == version)
        if using:
            raise Conflict(f"model version {version!r} is behind alias(es) {', '.join(using)}: "
                           "promote another version there first")

    def versions(self) -> list[dict]:
        """Every version's manifest, newest first."""
        manifests = []
        for name in self.store.folders(MODELS):  # one listing, not every file of every version
            if name != ALIASES.rsplit("/", 1)[1]:
                try:
                    manifests.append(self.manifest(name))
                except ModelNotFound:  # a version still being written (manifest comes last)
                    continue
        return sorted(manifests, key=lambda m: m.get("created_at", 0), reverse=True)

    def aliases(self) -> dict[str, dict]:
        """Every alias record by name."""
        keys = (k for k in self.store.list(ALIASES) if k.endswith(".json"))
        out = {}
        for key in keys:
            record = json.loads(self.store.get(key))
            out[record["alias"]] = record
        return out
