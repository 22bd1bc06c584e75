"""A read-only role for analysts: SELECT on every table and view in schema public, now and later.

The password never travels in clear text: libpq hashes it client-side (SCRAM-SHA-256 or md5,
whichever the server's `password_encryption` asks for), as psql's `\\password` does, so it
cannot end up in the server log or pg_stat_activity. After granting, the role's effective
rights are checked, and anything that would still let it write (a privilege inherited through
PUBLIC or another role, superuser, ownership) is an error: the caller's transaction then rolls
back and nothing changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from pipeline.config import Secret
from pipeline.errors import DatabaseError, UsageError

# Lower case only: an unquoted name in SQL folds to lower case, so `GRANT … TO Analyst` would
# miss a role created as "Analyst".
_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_RESERVED = frozenset(
    {"public", "none", "current_role", "current_user", "session_user", "user", "all"}
)
_WRITE_PRIVILEGES = "INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER"


@dataclass(frozen=True, slots=True)
class ReadonlyGrant:
    role: str
    created: bool  # False when the role existed and was updated
    login: bool  # whether the role can log in
    default_privileges_for: tuple[str, ...]  # owners whose future tables it can read


def validate_role_name(role: str) -> str:
    """The role name if it is a plain lower-case SQL identifier that may name a new role."""
    if not _ROLE_NAME.fullmatch(role):
        raise UsageError(
            f"role name {role[:80]!r} is not valid: use 1-63 lower-case letters, digits and "
            "underscores, not starting with a digit"
        )
    if role.startswith("pg_") or role in _RESERVED:
        raise UsageError(f"role name {role!r} is reserved by PostgreSQL")
    return role


def _quote(conn: Connection, identifier: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(identifier)


def _hashed_password(conn: Connection, role: str, password: Secret) -> str:
    """The password as the server would store it, computed by libpq on this side."""
    raw = conn.connection.dbapi_connection
    pgconn = getattr(raw, "pgconn", None)
    if pgconn is None:  # pragma: no cover - only psycopg 3 is supported (engine.py)
        raise UsageError("setting a password needs the psycopg 3 driver")
    hashed = pgconn.encrypt_password(password.reveal().encode(), role.encode())
    verifier = bytes(hashed).decode("ascii")
    # SCRAM-SHA-256$…, md5…: base64/hex only, but quote it anyway.
    return "'" + verifier.replace("'", "''") + "'"


def _set_password(conn: Connection, role: str, password: Secret) -> None:
    hashed = _hashed_password(conn, role, password)
    try:
        # Not text(): it would read ":…" inside the base64 verifier as a bind parameter.
        conn.exec_driver_sql(f"ALTER ROLE {_quote(conn, role)} LOGIN PASSWORD {hashed}")
    except DBAPIError as exc:
        # The statement holds the password hash: report only the server's reason.
        reason = getattr(getattr(exc.orig, "diag", None), "message_primary", None)
        raise DatabaseError(f"could not set the password of role {role!r}: {reason}") from None


def grant_readonly(conn: Connection, role: str, password: Secret | None) -> ReadonlyGrant:
    """Create or update `role` so it can SELECT every table and view in schema public, including
    ones created later, and write nothing. Runs in the caller's transaction (no commit).

    With a password the role can log in with it; without one a new role is NOLOGIN (grant it to
    people: `GRANT role TO alice`) and an existing role keeps its login and password."""
    validate_role_name(role)
    q = _quote(conn, role)
    current = conn.execute(text("SELECT current_user")).scalar_one()
    if role == current:
        raise UsageError("refusing to make the role running this command read-only")
    existing = conn.execute(
        text("SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = :r"), {"r": role}
    ).one_or_none()
    if existing is not None and existing.rolsuper:
        raise UsageError(f"role {role!r} is a superuser: it cannot be made read-only")

    login = password is not None or bool(existing is not None and existing.rolcanlogin)
    if existing is None:
        conn.execute(text(f"CREATE ROLE {q} NOLOGIN NOCREATEDB NOCREATEROLE NOINHERIT"))
    if password is not None:
        _set_password(conn, role, password)

    database = _quote(conn, conn.execute(text("SELECT current_database()")).scalar_one())
    for statement in (
        f"GRANT CONNECT ON DATABASE {database} TO {q}",
        f"GRANT USAGE ON SCHEMA public TO {q}",
        f"REVOKE CREATE ON SCHEMA public FROM {q}",
        f"REVOKE {_WRITE_PRIVILEGES} ON ALL TABLES IN SCHEMA public FROM {q}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {q}",
    ):
        conn.execute(text(statement))

    # Default privileges apply to objects created by a given role: cover this user and every
    # owner of existing tables it may act for (migrations may run as another user).
    owners = conn.execute(
        text(
            "SELECT DISTINCT o.rolname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_roles o ON o.oid = c.relowner "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f') "
            "AND pg_has_role(current_user, o.oid, 'MEMBER') "
            "UNION SELECT current_user ORDER BY 1"
        )
    ).scalars()
    covered = tuple(owners)
    for owner in covered:
        conn.execute(
            text(
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {_quote(conn, owner)} IN SCHEMA public "
                f"GRANT SELECT ON TABLES TO {q}"
            )
        )
    _check_read_only(conn, role)
    return ReadonlyGrant(role, existing is None, login, covered)


def _check_read_only(conn: Connection, role: str) -> None:
    """Fail unless `role` can read every table and view in public and write none of them."""
    problems = conn.execute(
        text(
            "SELECT c.relname, "
            "has_table_privilege(:r, c.oid, 'SELECT') AS can_read, "
            "has_table_privilege(:r, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE') AS can_write, "
            "pg_has_role(:r, c.relowner, 'USAGE') AS owns "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f') "
            "ORDER BY c.relname"
        ),
        {"r": role},
    ).all()
    bad = [p.relname for p in problems if not p.can_read or p.can_write or p.owns]
    if bad:
        raise UsageError(
            f"role {role!r} could still write (or not read) {', '.join(bad[:5])}: it owns them "
            "or inherits write privileges from another role or PUBLIC; revoke those first"
        )
    can_create = conn.execute(
        text(
            "SELECT has_schema_privilege(:r, 'public', 'CREATE') AS in_schema, "
            "has_database_privilege(:r, current_database(), 'CREATE') AS schemas"
        ),
        {"r": role},
    ).one()
    if can_create.in_schema:
        raise UsageError(
            f"role {role!r} can still create tables in schema public, through PUBLIC or "
            "another role (the default before PostgreSQL 15); run "
            "`REVOKE CREATE ON SCHEMA public FROM PUBLIC` first"
        )
    if can_create.schemas:
        raise UsageError(
            f"role {role!r} can create schemas in this database (through PUBLIC or another "
            "role); revoke CREATE ON DATABASE first"
        )
