"""API keys: made here, stored in configuration only as SHA-256 hashes, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from facesense.errors import ConfigError
from facesense.settings import Settings

KEY_PREFIX = "fsk_"  # makes a leaked key easy to recognise (and to grep for in logs)
NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")

log = logging.getLogger(__name__)


def new_key() -> str:
    """A fresh random key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The hex SHA-256 of a key: what configuration stores instead of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Grants:
    """What a key may do beyond submitting jobs: priority high, and what it may read (none
    given: the global FACESENSE_ALLOWED_ROOTS and any S3 prefix, outside the job store)."""

    high: bool = False
    roots: tuple[str, ...] = ()  # absolute local folders
    s3: tuple[str, ...] = ()  # s3://bucket or s3://bucket/prefix

    @property
    def scoped(self) -> bool:
        """True if the key reads only its own roots and S3 prefixes."""
        return bool(self.roots or self.s3)


def parse_grants(spec: str, where: str) -> Grants:
    """'high;/srv/ads/alice;s3://ads/alice' as Grants, each part checked (never echoed: a
    raw key pasted in the wrong place would end up in the log)."""
    high, roots, s3 = False, [], []
    for number, part in enumerate((p.strip() for p in spec.split(";")), 1):
        if part == "high":
            high = True
        elif part.startswith("s3://") and _clean(part[5:]):
            s3.append("s3://" + part[5:].strip("/"))
        elif part.startswith("/") and _clean(part):
            roots.append(part.rstrip("/") or "/")
        elif part:
            raise ConfigError(f"{where}: grant {number} must be 'high', an absolute folder or "
                              "s3://bucket/prefix, with no '.', '..' or empty path segments")
    return Grants(high, tuple(roots), tuple(s3))


def _clean(path: str) -> bool:
    """True for a path with no '.', '..' or empty segments, nor a backslash (one leading and
    one trailing '/' allowed): a scope names one folder, spelled one way."""
    inner = path.removeprefix("/").removesuffix("/")
    return bool(inner) and "\\" not in inner and all(
        p not in ("", ".", "..") for p in inner.split("/"))


def parse_keys(spec: str, variable: str) -> dict[str, str]:
    """'name:sha256hex,name2:sha256hex' as {name: hash}, with a clear error naming the variable."""
    return {name: digest for name, (digest, _) in parse_entries(spec, variable).items()}


def parse_entries(spec: str, variable: str) -> dict[str, tuple[str, Grants]]:
    """'name:sha256hex[:grant;grant...],...' as {name: (hash, grants)}; a clear error names the
    variable."""
    out: dict[str, tuple[str, Grants]] = {}
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            continue
        name, _, rest = item.partition(":")
        digest, _, grants = rest.partition(":")
        digest = digest.lower()
        # Never echo the item: a raw key pasted by mistake would end up in the log.
        if not HEX64.match(digest):
            raise ConfigError(f"{variable}: each entry must be NAME:SHA256HEX (64 hex digits; "
                              "`facesense keys new NAME` prints one), never the key itself")
        if not NAME.match(name):
            raise ConfigError(f"{variable}: key names are 1-64 letters, digits, '_', '.', '@' "
                              "or '-'")
        if name in out:
            raise ConfigError(f"{variable}: the key name {name!r} appears twice")
        out[name] = (digest, parse_grants(grants, f"{variable}: key {name!r}"))
    return out


@dataclass(frozen=True)
class Caller:
    """Who is asking: a key's name, role and grants; name None when authentication is off."""

    name: str | None
    admin: bool
    grants: Grants = field(default_factory=Grants)

    @property
    def may_use_high(self) -> bool:
        """True if this caller may queue priority high work (an admin, or a key granted it)."""
        return self.admin or self.grants.high

    def sees(self, owner: str | None) -> bool:
        """True if this caller may see a job owned by owner."""
        return self.admin or (owner is not None and owner == self.name)


OPEN = Caller(name=None, admin=True)  # no keys configured: everything is open, as before
ANONYMOUS = Caller(name=None, admin=False)  # keys configured, none given (public routes only)


class Keyring:
    """The configured keys (user and admin) by name, as hashes: from the environment, plus a keys
    file (FACESENSE_KEYS_FILE) re-read when it changes, so keys rotate without a restart."""

    def __init__(self, users: dict[str, tuple[str, Grants] | str],
                 admins: dict[str, tuple[str, Grants] | str],
                 path: str | Path | None = None, check_every_s: float = 1.0):
        # a bare hash: a key with no grants
        self.base = tuple({n: (v, Grants()) if isinstance(v, str) else v for n, v in d.items()}
                          for d in (users, admins))
        self.check_every_s = check_every_s
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._checked, self._error = time.monotonic(), None
        self._data = snapshot(self.path) if self.path else None
        if self.path and self._data is None:  # at start-up a wrong path is a mistake: fail fast
            raise ConfigError(f"FACESENSE_KEYS_FILE: cannot read {self.path}: no such file")
        self.entries = self._entries(self._data)

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        """The keyring of FACESENSE_API_KEYS, FACESENSE_ADMIN_KEYS and FACESENSE_KEYS_FILE."""
        return cls(parse_entries(settings.api_keys, "FACESENSE_API_KEYS"),
                   parse_entries(settings.admin_keys, "FACESENSE_ADMIN_KEYS"),
                   path=settings.keys_file or None)

    def _entries(self, data: bytes | None) -> list[tuple[str, str, bool, Grants]]:
        """(name, hash, admin, grants) for every key of the environment and the keys file."""
        users, admins = (dict(d) for d in self.base)
        from_file = parse_keys_file(data, self.path.name) if data is not None else ({}, {})
        for mine, theirs in zip((users, admins), from_file, strict=True):
            clash = sorted(set(mine) & set(theirs))
            if clash:
                raise ConfigError(f"{self.path.name}: key name(s) also in the environment: "
                                  f"{', '.join(clash)}")
            mine.update(theirs)
        both = sorted(set(users) & set(admins))
        if both:
            raise ConfigError(f"key name(s) in both FACESENSE_API_KEYS and FACESENSE_ADMIN_KEYS "
                              f"(environment or keys file): {', '.join(both)}")
        entries = [(n, h, False, g) for n, (h, g) in users.items()] + \
            [(n, h, True, g) for n, (h, g) in admins.items()]
        # One key must name one caller: listed twice (say as a user and as an admin), which
        # name and rights it carries would hang on the order of the lines.
        names: dict[str, list[str]] = {}
        for name, digest, _, _ in entries:
            names.setdefault(digest, []).append(name)
        twice = sorted(", ".join(n) for n in names.values() if len(n) > 1)
        if twice:
            raise ConfigError(f"one key is configured under several names: {'; '.join(twice)}")
        return entries

    def refresh(self) -> None:
        """Re-read the keys file if it changed (at most every check_every_s seconds)."""
        if not self.path or time.monotonic() - self._checked < self.check_every_s:
            return
        with self._lock:
            self._checked = time.monotonic()
            try:
                data = snapshot(self.path)  # None: deleted, which revokes the file's keys
                if data == self._data:
                    return
                entries = self._entries(data)
            except ConfigError as e:  # a typo must not lock everyone out: keep the last keys
                if str(e) != self._error:  # once per problem, not every second
                    log.error("API keys file not reloaded, the previous keys stay in force: %s", e)
                self._error = str(e)
                return
            self._data, self.entries, self._error = data, entries, None
            log.info("API keys reloaded from %s: %d keys", self.path, len(entries))

    @property
    def enabled(self) -> bool:
        """True when keys are required: any key, or a keys file (an emptied one locks the API)."""
        return bool(self.entries) or self.path is not None

    def identify(self, key: str) -> Caller | None:
        """The caller holding this key, or None (every hash compared in constant time)."""
        # compare_digest against every hash, no early exit: timing tells nothing of which matched
        self.refresh()
        digest = hash_key(key).encode()
        found = None
        for name, expected, admin, grants in self.entries:
            if hmac.compare_digest(digest, expected.encode()):
                found = Caller(name, admin, grants)
        return found


def snapshot(path: Path) -> bytes | None:
    """The file's bytes (compared whole, so any rewrite is seen), or None if it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"FACESENSE_KEYS_FILE: cannot read {path}: {e.strerror}") from None


def parse_keys_file(data: bytes, name: str) -> tuple[dict[str, tuple[str, Grants]],
                                                     dict[str, tuple[str, Grants]]]:
    """(users, admins) from FACESENSE_API_KEYS=... / FACESENSE_ADMIN_KEYS=... lines, # comments."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"FACESENSE_KEYS_FILE: {name} is not UTF-8 text") from None
    found: dict[str, dict] = {"FACESENSE_API_KEYS": {}, "FACESENSE_ADMIN_KEYS": {}}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        variable, _, spec = line.partition("=")
        variable, where = variable.strip(), f"{name} line {number}"
        if variable not in found:  # never echo the line: it may hold a raw key
            raise ConfigError(f"{where}: expected FACESENSE_API_KEYS=... or "
                              "FACESENSE_ADMIN_KEYS=...")
        entries = parse_entries(spec, where)
        clash = sorted(set(entries) & set(found[variable]))
        if clash:
            raise ConfigError(f"{where}: the key name {clash[0]!r} appears twice")
        found[variable].update(entries)
    return found["FACESENSE_API_KEYS"], found["FACESENSE_ADMIN_KEYS"]


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name (or '' / 0.0.0.0 = every address): treat as exposed


def check_exposure(settings: Settings, keyring: Keyring | None = None) -> None:
    """Refuse an API on a non-loopback address with no keys, unless FACESENSE_ALLOW_OPEN_API=1."""
    keyring = keyring or Keyring.from_settings(settings)
    if keyring.enabled or settings.allow_open_api or is_loopback(settings.api_host):
        return
    raise ConfigError(
        f"refusing to serve the API on {settings.api_host!r} with no API keys: anyone who can "
        "reach it could read every job. Configure FACESENSE_API_KEYS / FACESENSE_ADMIN_KEYS "
        "(`facesense keys new NAME`), listen on 127.0.0.1, or set FACESENSE_ALLOW_OPEN_API=1 "
        "if something in front of it (a proxy, a private network) already controls access")
