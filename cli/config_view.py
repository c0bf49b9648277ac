"""`facesense config`: the effective settings, secrets masked, and where each one came from."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping

from facesense.settings import PREFIX, URL_PASSWORD, Settings, is_secret

# settings the CLI's own global options override, and the option that does
FROM_OPTIONS = {"api_url": ("api", "--api"), "api_key": ("api_key", "--key")}


def effective(settings: Settings, args, environ: Mapping[str, str] | None = None) -> list[dict]:
    """One row per setting: variable, value (secrets masked), source (default, environment or
    a command-line option), and the help text."""
    environ = os.environ if environ is None else environ
    rows = []
    for f in dataclasses.fields(Settings):
        variable = PREFIX + f.name.upper()
        value, source = getattr(settings, f.name), "default"
        if variable in environ:
            source = "environment"
        dest, option = FROM_OPTIONS.get(f.name, (None, None))
        if dest and getattr(args, dest, None):
            value, source = getattr(args, dest), f"command line ({option})"
        rows.append({"variable": variable, "value": masked(f.name, value), "source": source,
                     "help": f.metadata["help"]})
    return rows


def masked(name: str, value):
    """The value safe to print: a secret as ***, a password inside a URL as ***."""
    if value and is_secret(name):
        return "***"
    if isinstance(value, str):
        return URL_PASSWORD.sub(r"\1***@", value)
    return list(value) if isinstance(value, tuple) else value


def cmd_config(args, settings: Settings) -> int:
    """Print the effective settings (the settings themselves were checked on the way in)."""
    rows = effective(settings, args)
    if args.only_set:
        rows = [r for r in rows if r["source"] != "default"]
    if args.json:
        print(json.dumps({r["variable"]: {"value": r["value"], "source": r["source"]}
                          for r in rows}, indent=2))
        return 0
    width = max((len(r["variable"]) for r in rows), default=0)
    for r in rows:
        value = ":".join(r["value"]) if isinstance(r["value"], list) else r["value"]
        print(f"{r['variable']:<{width}}  {value!s:<24}  {r['source']}")
    return 0


def add_parser(sub) -> None:
    """The `config` sub-command."""
    config = sub.add_parser("config", help="print the effective settings (secrets masked) and "
                            "where each came from; a bad setting exits 2 naming it")
    config.add_argument("--only-set", action="store_true",
                        help="only the settings not at their defaults")
    config.set_defaults(func=cmd_config)
