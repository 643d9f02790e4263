"""PostgreSQL for the result-backend tests: the machine's server (127.0.0.1:5432, user postgres,
trust authentication), or the one CCW_POSTGRESQL_URL names, and a private database per session.

The tests never write to an existing database: each session (each xdist worker) creates one named
ccw_test_<pid>_<random>, and drops it at the end, connections and all.
"""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from typing_extensions import LiteralString

# A libpq URL of a role that may CREATE DATABASE; its database is only used to create ours.
ADMIN_URL = os.environ.get("CCW_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CONNECT_TIMEOUT = 3


def problem(paths: dict[str, str] | None = None) -> str | None:
    """Why the tests cannot use PostgreSQL here (tools.py's check), or None."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install --group test)"
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=CONNECT_TIMEOUT):
            return None
    except psycopg.Error as error:
        where = urlsplit(ADMIN_URL).hostname or "the local socket"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"no PostgreSQL answers at {where}: {reason}"


class PrivateDatabase:
    """A database of our own on the server, dropped by close()."""

    def __init__(self, admin_url: str = ADMIN_URL) -> None:
        self.admin_url = admin_url
        self.name = f"ccw_test_{os.getpid()}_{secrets.token_hex(4)}"
        self._admin("CREATE DATABASE {}")
        parts = urlsplit(admin_url)
        self.libpq_url = urlunsplit(parts._replace(path=f"/{self.name}"))
        # Celery's database backend: SQLAlchemy's URL, psycopg 3 dialect, behind "db+".
        self.url = urlunsplit(parts._replace(scheme="db+postgresql+psycopg", path=f"/{self.name}"))

    def _admin(self, template: LiteralString) -> None:
        """A statement on the admin connection, outside a transaction, about our database."""
        import psycopg
        from psycopg import sql

        statement = sql.SQL(template).format(sql.Identifier(self.name))
        with psycopg.connect(
            self.admin_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
        ) as connection:
            connection.execute(statement)

    def query(self, statement: LiteralString, *params: object) -> list[tuple[Any, ...]]:
        """Rows of a statement run in our database (committed)."""
        import psycopg

        with psycopg.connect(self.libpq_url, connect_timeout=CONNECT_TIMEOUT) as connection:
            cursor = connection.execute(statement, params)
            return list(cursor.fetchall()) if cursor.description else []

    def close(self) -> None:
        # FORCE (PostgreSQL 13+) ends the connections a killed worker may have left.
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)")
