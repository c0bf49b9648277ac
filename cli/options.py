"""The CLI's global options (--api, --key, --json), taken before or after the command, and its
quiet end on a closed pipe."""

from __future__ import annotations

import argparse
import os
import sys

from facesense.client import Client
from facesense.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 3  # 2 is also argparse's
EXIT_PIPE = 141  # 128 + SIGPIPE: what `yes | head` reports for `yes` under pipefail

# dest -> the value when the option is given nowhere
DEFAULTS = {"api": None, "api_key": None, "json": False}


def add_global_options(p: argparse.ArgumentParser) -> None:
    """Give p and every sub-command under it --api, --key and --json. Their defaults are
    SUPPRESS, so a value given at one level is never overwritten by another level's default
    (argparse copies a sub-command's defaults over the values parsed before it)."""
    for parser in _all_parsers(p):
        have = {s for a in parser._actions for s in a.option_strings}
        if "--api" not in have:
            parser.add_argument("--api", default=argparse.SUPPRESS, metavar="URL",
                                help="API URL (default: FACESENSE_API_URL or the embedded one)")
        if "--key" not in have:
            parser.add_argument("--key", "--api-key", dest="api_key", default=argparse.SUPPRESS,
                                metavar="KEY", help="API key sent as a bearer token "
                                "(default: FACESENSE_API_KEY)")
        if "--json" in have:  # the command's own --json, with its own help: same rule
            next(a for a in parser._actions if "--json" in a.option_strings).default = argparse.SUPPRESS
        else:
            parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                                help="print JSON instead of text (for scripts)")


def finish(args: argparse.Namespace) -> argparse.Namespace:
    """Fill in the global options given nowhere."""
    for dest, default in DEFAULTS.items():
        if not hasattr(args, dest):
            setattr(args, dest, default)
    return args


def client(args, settings: Settings) -> Client:
    """An API client for --api or the configured URL, sending --key or FACESENSE_API_KEY."""
    return Client(args.api or settings.client_api_url, api_key=args.api_key or settings.api_key)


def pipe_closed() -> int:
    """The reader of stdout went away (`facesense results ID | head`): stop quietly. Whatever is
    still buffered would fail again at exit, so stdout now points at /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout already closed or not a real file
        pass
    return EXIT_PIPE


def _all_parsers(p: argparse.ArgumentParser):
    """p and every sub-command parser under it, depth first."""
    yield p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share one parser
                yield from _all_parsers(sub)
