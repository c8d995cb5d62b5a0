"""Database URLs: the backends the store supports, their normalised form, and redaction for messages.

`StoreError` is defined here, the store's lowest module (a bad URL is the first thing it can refuse); it
is re-exported by `twin.store` and `twin.store.repository`.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from twin.errors import TwinError

DEFAULT_DB_URL: Final = "sqlite:///twin.db"


class StoreError(TwinError, ValueError):
    """A store URL, argument or record is invalid; the message names the field and the value."""


class StoreUnavailable(StoreError):  # noqa: N818 (named like sensors.errors.SensorUnavailable)
    """The database cannot be reached right now (retry the same write later); not a problem with the data."""


def normalize_url(url: str) -> str:
    """A SQLAlchemy URL for a supported backend: `sqlite:///PATH` or `postgresql+psycopg://…`.

    `postgresql://` and `postgres://` are read as psycopg 3 (the installed driver). Raises `StoreError`.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"db url(={url!r}) is not a database URL: {exc}") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return url
    raise StoreError(
        f"db url(={parsed.render_as_string(hide_password=True)!r}) must be sqlite:///PATH or "
        "postgresql+psycopg://USER@HOST:PORT/DB."
    )


def redact_url(url: str) -> str:
    """The URL with any password masked, for messages and status output."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid url>"
