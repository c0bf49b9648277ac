"""`facesense keys new` and `keys hash`: make API keys and the lines that configure them."""

from __future__ import annotations

import json
import sys

from facesense.errors import FacesenseError
from facesense.keys import hash_key, new_key, parse_keys
from facesense.settings import Settings


def cmd_keys_new(args, settings: Settings) -> int:
    """Print a new key (shown once, stored nowhere) and the line that configures its hash."""
    key = new_key()
    line = config_line(args, hash_key(key))
    if getattr(args, "json", False):
        print(json.dumps({"name": args.name, "key": key, "line": line}))
        return 0
    print(key)  # stdout holds the key alone, for scripts: KEY=$(facesense keys new NAME)
    print(f"# give the key above to its holder; only its hash goes in the API's environment "
          f"(','-separate several keys):\n{line}", file=sys.stderr)
    return 0


def cmd_keys_hash(args, settings: Settings) -> int:
    """Print the configuration line for a key read from stdin (kept out of shell history)."""
    key = sys.stdin.readline().strip()
    if not key:
        raise FacesenseError("give the key on stdin, e.g. `facesense keys hash NAME < keyfile`")
    line = config_line(args, hash_key(key))
    print(json.dumps({"name": args.name, "line": line}) if getattr(args, "json", False) else line)
    return 0


def config_line(args, digest: str) -> str:
    """FACESENSE_API_KEYS=name:hash (or ADMIN_KEYS), checked as the server will parse it."""
    variable = "FACESENSE_ADMIN_KEYS" if args.admin else "FACESENSE_API_KEYS"
    parse_keys(f"{args.name}:{digest}", variable)  # a bad name fails here, not at start-up
    return f"{variable}={args.name}:{digest}"
