"""API keys: made here, stored in configuration only as SHA-256 hashes, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass

from facesense.errors import ConfigError
from facesense.settings import Settings

KEY_PREFIX = "fsk_"  # makes a leaked key easy to recognise (and to grep for in logs)
NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


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
    """The configured keys (user and admin) by name, as hashes."""

    def __init__(self, users: dict[str, str], admins: dict[str, str]):
        both = sorted(set(users) & set(admins))
        if both:
            raise ConfigError(f"key name(s) in both FACESENSE_API_KEYS and "
                              f"FACESENSE_ADMIN_KEYS: {', '.join(both)}")
        self.entries = [(n, h, False) for n, h in users.items()] + \
                       [(n, h, True) for n, h in admins.items()]

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        """The keyring configured by FACESENSE_API_KEYS and FACESENSE_ADMIN_KEYS."""
        return cls(parse_keys(settings.api_keys, "FACESENSE_API_KEYS"),
                   parse_keys(settings.admin_keys, "FACESENSE_ADMIN_KEYS"))

    @property
    def enabled(self) -> bool:
        """True when any key is configured (then every non-public request needs one)."""
        return bool(self.entries)

    def identify(self, key: str) -> Caller | None:
        """The caller holding this key, or None. Every configured hash is compared with
        hmac.compare_digest, with no early exit, so timing tells nothing about which matched."""
        digest = hash_key(key).encode()
        found = None
        for name, expected, admin in self.entries:
            if hmac.compare_digest(digest, expected.encode()):
                found = Caller(name, admin)
        return found


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
