"""Logging set-up shared by the API, workers and the launcher."""

from __future__ import annotations

import logging


def setup_logging(level: str = "INFO") -> None:
    """One format everywhere."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s",
    )
    for noisy in ("botocore", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("werkzeug").setLevel(max(logging.getLevelName(level.upper()), logging.INFO))
