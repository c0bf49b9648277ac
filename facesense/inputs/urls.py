"""A scoring job over a list of image URLs: one item per URL, fetched through the SSRF guard.

An item's key is its URL, or `<group>/<URL>` when the caller names a group; a bare URL's group
is its host. The list is stored under the job's prefix, so messages still carry only ids.
"""

from __future__ import annotations

import io
import json
import re
from urllib.parse import urlsplit

from facesense.errors import BadRequest, PayloadTooLarge
from facesense.inputs.netguard import Limits, fetch
from facesense.settings import Settings
from facesense.storage import Store, layout

URLS_SCHEME = "urls:"
MAX_URL_CHARS = 4096
_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")
_GROUP = re.compile(r"^[^/:\\\x00-\x1f\x7f]{1,100}$")


def is_url_key(key: str) -> bool:
    """True for a bare URL key (`scheme://...`); store keys never hold an empty part."""
    head, _, rest = key.partition("/")
    return head.endswith(":") and rest.startswith("/")


def split_url_key(key: str) -> tuple[str, str]:
    """(group, URL) of a URL item's key."""
    if is_url_key(key):
        return urlsplit(key).hostname or "", key
    group, _, url = key.partition("/")
    return group, url


def url_item_key(entry, index: int) -> str:
    """The key of one `urls` entry: a URL string, or {"url": ..., "group": ...}."""
    where = f"urls[{index}]"
    if isinstance(entry, dict):
        unknown = sorted(set(entry) - {"url", "group"})
        if unknown:
            raise BadRequest(f"{where}: unknown field(s): {', '.join(unknown)}")
        url, group = entry.get("url"), entry.get("group")
        if group is not None and (not isinstance(group, str) or not _GROUP.match(group)
                                  or group.strip(". ") == ""):
            raise BadRequest(f"{where}.group must be 1-100 characters without '/', ':' "
                             "or control characters")
    else:
        url, group = entry, None
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS or not _ABSOLUTE.match(url):
        raise BadRequest(f"{where} must be an absolute URL (scheme://host/...) of at most "
                         f"{MAX_URL_CHARS} characters")
    return f"{group}/{url}" if group else url


def save_url_list(urls, store: Store, job_id: str, settings: Settings) -> str:
    """Validate a job's `urls`, store them under the job, and return the job's source."""
    if not isinstance(urls, list) or not urls:
        raise BadRequest("'urls' must be a non-empty list of URLs")
    if len(urls) > settings.url_max_per_job:
        raise PayloadTooLarge(f"{len(urls)} URLs; the limit is {settings.url_max_per_job} "
                              "per job (FACESENSE_URL_MAX_PER_JOB)")
    keys = [url_item_key(entry, i) for i, entry in enumerate(urls)]
    key = layout.url_list(job_id)
    store.put(key, json.dumps(keys).encode())
    return URLS_SCHEME + key


class UrlSource:
    """A job's URL list, read like a store: list() gives the keys, open() fetches one."""

    def __init__(self, store: Store, key: str, settings: Settings):
        self.store, self.key = store, key
        self.limits = Limits.from_settings(settings)

    def list(self) -> list[str]:
        """The item keys, in the order the caller gave them."""
        return json.loads(self.store.get(self.key))

    def open(self, key: str) -> io.BytesIO:
        """The image at an item's URL; FetchError (the row's reason) if it can't be had."""
        return io.BytesIO(fetch(split_url_key(key)[1], self.limits))
