"""ImageNet weights for `pretrained: true`: downloaded once, hash-checked, kept in the store.

The file's name carries the first hex digits of its SHA-256 (torchvision's convention, which
torch.hub's check_hash also follows: alexnet-owt-7be5be79.pth), so the expected hash comes from
the configured URL and a mirror serving the same file passes the same check. The checked file
is kept at layout.pretrained_key(<file name>), where every worker (on any machine) finds it.
Torch-free: the trainer loads the bytes this returns; the API asks `check_available`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import tempfile
import threading
from typing import BinaryIO
from urllib.parse import urlsplit

from facesense.errors import ConfigError, Conflict, ModelError, ObjectNotFound, TransientError
from facesense.inputs.netguard import FetchError, Limits, Refused, fetch, head
from facesense.settings import Settings
from facesense.storage import Store, TooLarge, read_limited
from facesense.storage.layout import pretrained_key

log = logging.getLogger(__name__)
TORCHVISION_FILE = "alexnet-owt-7be5be79.pth"  # the name a mirror folder is asked for
MAX_BYTES = 512 << 20  # AlexNet's file is 233 MiB; anything far larger is not that file
FILE_NAME = re.compile(r"[\w.-]+\.pth")
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.")  # torch.hub's HASH_REGEX, 8+ digits
# The URL is the operator's setting, never a request's, and a closed network's mirror is usually
# on a private address: the address rules for users' URLs don't apply (scheme, time, size do).
ANYWHERE = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


class PretrainedUnavailable(Conflict):
    """Pretrained weights are neither in the store nor reachable at the configured URL."""

    code = "pretrained_unavailable"


def weights_url(settings: Settings) -> str:
    """The file's URL from FACESENSE_PRETRAINED_URL (a .pth URL, or a mirror folder); '' if off."""
    url = settings.pretrained_url.strip()
    if not url or urlsplit(url).path.endswith(".pth"):
        return url
    return url.rstrip("/") + "/" + TORCHVISION_FILE


def file_name(settings: Settings) -> str:
    """The weights' file name: the URL's last path segment (torchvision's when downloads are off)."""
    url = weights_url(settings)
    name = urlsplit(url).path.rsplit("/", 1)[-1] if url else TORCHVISION_FILE
    if not FILE_NAME.fullmatch(name) or not HASH_IN_NAME.search(name):
        raise ConfigError(f"FACESENSE_PRETRAINED_URL={settings.pretrained_url!r}: the file name "
                          f"must look like {TORCHVISION_FILE} (name-<first 8+ hex digits of its "
                          "SHA-256>.pth), so that its hash can be checked")
    return name


def expected_prefix(name: str) -> str:
    """The SHA-256 prefix a file name promises (alexnet-owt-7be5be79.pth -> 7be5be79)."""
    return HASH_IN_NAME.search(name).group(1)


def store_key(settings: Settings) -> str:
    """Where the checked file is kept in the store."""
    return pretrained_key(file_name(settings))


def how_to_fix(store: Store, settings: Settings) -> str:
    """What an operator can do when the weights can't be had, in one sentence."""
    return (f"set FACESENSE_PRETRAINED_URL to a reachable mirror of {file_name(settings)} (the "
            f"file's URL, or its folder's), or copy the file into the store at "
            f"{store.uri_for(store_key(settings))}, or train with pretrained=false")


def pretrained_state_bytes(store: Store, settings: Settings) -> bytes:
    """The checked weights file (a torch state dict's .pth bytes): the store copy, else a
    download that is checked and then kept in the store for every worker."""
    name, key = file_name(settings), store_key(settings)
    prefix = expected_prefix(name)
    try:
        data = read_limited(store, key, MAX_BYTES)
        if hashlib.sha256(data).hexdigest().startswith(prefix):
            return data
        log.warning("store copy %s fails its hash check; downloading it again", key)
    except TooLarge:
        log.warning("store copy %s is over %d bytes; downloading it again", key, MAX_BYTES)
    except ObjectNotFound:
        pass  # the first use anywhere: download it
    url = weights_url(settings)
    if not url:
        raise PretrainedUnavailable(f"pretrained weights {name} are not in the store and "
                                    f"downloads are off; {how_to_fix(store, settings)}")
    with tempfile.TemporaryFile() as f:
        download(url, f, prefix, Limits(max_bytes=MAX_BYTES,
                                        connect_timeout=settings.url_connect_timeout_s,
                                        timeout=settings.pretrained_timeout_s, allow=ANYWHERE))
        f.seek(0)
        # Two workers downloading at once each put the same checked bytes in one atomic write:
        # the store ends with one valid copy whichever lands last.
        store.put_stream(key, f)
        log.info("pretrained weights %s downloaded from %s and kept at %s", name, url, key)
        f.seek(0)
        return f.read()


def download(url: str, sink: BinaryIO, prefix: str, limits: Limits) -> None:
    """Stream url into sink and check that its SHA-256 starts with prefix."""
    hashing = _Hashing(sink)
    try:
        fetch(url, limits, sink=hashing)
    except Refused as e:
        raise PretrainedUnavailable(f"cannot download {url}: {e}") from None
    except FetchError as e:
        if str(e).startswith(("http 4", "too large")):  # the wrong file or none: a retry won't help
            raise PretrainedUnavailable(f"cannot download {url}: {e}") from None
        raise TransientError(f"cannot download {url}: {e}") from None
    digest = hashing.sha.hexdigest()
    if not digest.startswith(prefix):
        raise ModelError(f"the file downloaded from {url} fails its hash check: its SHA-256 is "
                         f"{digest[:len(prefix)]}..., its name promises {prefix}...; the server "
                         "(or a proxy) sent a different or damaged file, and it was not kept")


def check_available(store: Store, settings: Settings) -> str:
    """'store' if the store holds the weights, 'url' if the URL answers a HEAD with 2xx;
    else PretrainedUnavailable naming what is missing and how to fix it."""
    key, url = store_key(settings), weights_url(settings)
    if store.exists(key):
        return "store"
    if not url:
        reason = "downloads are off (FACESENSE_PRETRAINED_URL is empty)"
    else:
        wait = settings.url_connect_timeout_s
        limits = Limits(max_bytes=0, connect_timeout=wait, timeout=wait, allow=ANYWHERE)
        reason = _within(wait + 1, lambda: _head_problem(url, limits),
                         late=f"{url} did not answer within {wait + 1} s") or ""
        if not reason:
            return "url"
    raise PretrainedUnavailable(
        f"pretrained=true needs ImageNet weights {file_name(settings)}, but the store has no "
        f"copy at {key} and {reason}; {how_to_fix(store, settings)}")


def _head_problem(url: str, limits: Limits) -> str | None:
    """None if a HEAD to url ends in 2xx, else why not."""
    try:
        status = head(url, limits)
    except FetchError as e:
        return f"{url} is not reachable from here ({e})"
    return None if 200 <= status < 300 else f"{url} answers http {status}"


def _within(seconds: float, probe, late: str) -> str | None:
    """probe()'s answer, or late after seconds: a name lookup has no timeout of its own."""
    answer: list[str | None] = ["the check of the URL failed"]  # kept if probe() raises

    def run():
        answer[0] = probe()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return late if thread.is_alive() else answer[0]


class _Hashing:
    """A writable file that hashes what passes through it."""

    def __init__(self, sink: BinaryIO):
        self.sink, self.sha = sink, hashlib.sha256()

    def write(self, chunk: bytes) -> int:
        self.sha.update(chunk)
        return self.sink.write(chunk)
