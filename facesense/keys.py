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
from dataclasses import dataclass
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


def parse_keys(spec: str, variable: str) -> dict[str, str]:
    """'name:sha256hex,name2:sha256hex' as {name: hash}, with a clear error naming the variable."""
    out: dict[str, str] = {}
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            continue
        name, _, digest = item.partition(":")
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
        out[name] = digest
    return out


@dataclass(frozen=True)
class Caller:
    """Who is asking: a key's name and role; name None when authentication is off."""

    name: str | None
    admin: bool

    def sees(self, owner: str | None) -> bool:
        """True if this caller may see a job owned by owner."""
        return self.admin or (owner is not None and owner == self.name)


OPEN = Caller(name=None, admin=True)  # no keys configured: everything is open, as before
ANONYMOUS = Caller(name=None, admin=False)  # keys configured, none given (public routes only)


class Keyring:
    """The configured keys (user and admin) by name, as hashes: from the environment, plus a keys
    file (FACESENSE_KEYS_FILE) re-read when it changes, so keys rotate without a restart."""

    def __init__(self, users: dict[str, str], admins: dict[str, str],
                 path: str | Path | None = None, check_every_s: float = 1.0):
        self.base, self.check_every_s = (users, admins), check_every_s
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
        return cls(parse_keys(settings.api_keys, "FACESENSE_API_KEYS"),
                   parse_keys(settings.admin_keys, "FACESENSE_ADMIN_KEYS"),
                   path=settings.keys_file or None)

    def _entries(self, data: bytes | None) -> list[tuple[str, str, bool]]:
        """(name, hash, admin) for every key of the environment and the keys file's data."""
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
        entries = [(n, h, False) for n, h in users.items()] + [(n, h, True) for n, h in admins.items()]
        # One key must name one caller: listed twice (say as a user and as an admin), which
        # name and rights it carries would hang on the order of the lines.
        names: dict[str, list[str]] = {}
        for name, digest, _ in entries:
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
        for name, expected, admin in self.entries:
            if hmac.compare_digest(digest, expected.encode()):
                found = Caller(name, admin)
        return found


def snapshot(path: Path) -> bytes | None:
    """The file's bytes (compared whole, so any rewrite is seen), or None if it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"FACESENSE_KEYS_FILE: cannot read {path}: {e.strerror}") from None


def parse_keys_file(data: bytes, name: str) -> tuple[dict[str, str], dict[str, str]]:
    """(users, admins) from FACESENSE_API_KEYS=... / FACESENSE_ADMIN_KEYS=... lines, # comments."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"FACESENSE_KEYS_FILE: {name} is not UTF-8 text") from None
    found: dict[str, dict[str, str]] = {"FACESENSE_API_KEYS": {}, "FACESENSE_ADMIN_KEYS": {}}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        variable, _, spec = line.partition("=")
        variable, where = variable.strip(), f"{name} line {number}"
        if variable not in found:  # never echo the line: it may hold a raw key
            raise ConfigError(f"{where}: expected FACESENSE_API_KEYS=... or "
                              "FACESENSE_ADMIN_KEYS=...")
        entries = parse_keys(spec, where)
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
