"""`ingest db …`: migrations, connection details, psql, and a read-only role for analysts."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

import click
from sqlalchemy.engine import URL

from pipeline.cli.common import open_database, print_json
from pipeline.cli.exits import EXIT_DATABASE
from pipeline.cli.options import DatabaseOptions, database_options
from pipeline.config import Secret
from pipeline.db.engine import psql_binary
from pipeline.db.migrate import current_revision, head_revision, upgrade
from pipeline.db.readonly import grant_readonly, validate_role_name
from pipeline.errors import UsageError


@click.group("db", short_help="Migrations, connection details, psql, read-only roles.")
def db_group() -> None:
    """Manage the database: migrations, connection details, psql, read-only roles."""


@db_group.command("upgrade", short_help="Apply pending migrations.")
@database_options
def db_upgrade(database: DatabaseOptions) -> None:
    """Apply pending migrations (the embedded database is upgraded automatically)."""
    with open_database(database, require_schema=False, migrate=False) as db:
        with db.engine.connect() as conn:
            before = current_revision(conn)
        rebuilt = upgrade(db.engine)
    click.echo(f"database at {head_revision()} (was {before or 'empty'})")
    if rebuilt:
        click.echo(f"rebuilt the content of {rebuilt} stored payloads with this version")


@db_group.command("current", short_help="Schema revision of the database and of this code.")
@database_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def db_current(database: DatabaseOptions, as_json: bool) -> None:
    """Print the schema revision of the database and of this code; exit 3 when the database
    is behind (run `ingest db upgrade`)."""
    with (
        open_database(database, require_schema=False, migrate=False) as db,
        db.engine.connect() as conn,
    ):
        current = current_revision(conn)
    head = head_revision()
    up_to_date = current == head
    if as_json:
        print_json({"database": current, "code": head, "up_to_date": up_to_date})
    else:
        state = "up to date" if up_to_date else "behind: run `ingest db upgrade`"
        click.echo(f"database: {current or 'empty'} · code: {head} · {state}")
    if not up_to_date:
        raise SystemExit(EXIT_DATABASE)


@db_group.command("url", short_help="The database URL (password hidden).")
@database_options
def db_url(database: DatabaseOptions) -> None:
    """Print the database URL (password hidden) and how to open it with psql."""
    with open_database(database, require_schema=False, migrate=False) as db:
        click.echo(_libpq_url(db.engine.url).render_as_string(hide_password=True))
        embedded = db.embedded
    if embedded:
        click.echo(
            "\nThe embedded server runs while an `ingest` command uses it. For an interactive\n"
            "session that keeps it running, use:  ingest db psql"
        )


def _libpq_url(url: URL) -> URL:
    return url.set(drivername="postgresql")


def role_from_psql_args(args: Sequence[str]) -> tuple[str | None, list[str]]:
    """psql's own `-U ROLE` / `--username ROLE` taken out of `args` (the URL must carry the
    role: psql lets the URL's user win over -U)."""
    role: str | None = None
    rest: list[str] = []
    it = iter(args)
    for arg in it:
        if arg == "--":
            rest += [arg, *it]
            break
        if arg in ("-U", "--username"):
            role = next(it, None)
            if role is None:
                raise UsageError(f"{arg} needs a role name")
        elif arg.startswith("--username="):
            role = arg.split("=", 1)[1]
        elif arg.startswith("-U") and len(arg) > 2:
            role = arg[2:]
        else:
            rest.append(arg)
    return role, rest


@db_group.command(
    "psql",
    context_settings={"ignore_unknown_options": True},
    short_help="Open psql on the database.",
)
@database_options
@click.option(
    "--role",
    metavar="ROLE",
    help="Connect as ROLE (psql's -U works too) with its own password (PGPASSWORD, ~/.pgpass "
    "or a prompt); never with the owner's. Default: the user of the database URL.",
)
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
def db_psql(database: DatabaseOptions, role: str | None, psql_args: tuple[str, ...]) -> None:
    """Open psql on the database (the embedded one by default); extra arguments go to psql."""
    psql_role, args = role_from_psql_args(psql_args)
    if role and psql_role and role != psql_role:
        raise UsageError(f"--role {role} and -U {psql_role} name different roles")
    role = role or psql_role
    psql = psql_binary()
    if psql is None:
        raise UsageError("psql not found on PATH")
    with open_database(database, require_schema=False, migrate=False) as db:
        url = _libpq_url(db.engine.url)
    if role is not None:
        # The named role, with its own credentials: the owner's password must not come along.
        url = url.set(username=role, password=None)
    uri = url.render_as_string(hide_password=False)
    code = subprocess.call([psql, uri, *args])  # noqa: S603 - the user's own database
    raise SystemExit(code)


@db_group.command("grant-readonly", short_help="Create or update a read-only role.")
@database_options
@click.argument("role")
@click.option(
    "--password-env",
    metavar="VAR",
    help=(
        "Name of an environment variable holding the role's password (never an argument, so "
        "it stays out of shell history); the role can then log in with it. Without it a new "
        "role cannot log in (GRANT it to people), and an existing one keeps its password."
    ),
)
def grant_readonly_command(database: DatabaseOptions, role: str, password_env: str | None) -> None:
    """Create or update ROLE so it can SELECT every table and view, including ones created
    later, and write nothing."""
    validate_role_name(role)
    password = None
    if password_env is not None:
        value = os.environ.get(password_env)
        if not value:
            raise UsageError(f"environment variable {password_env} is not set or is empty")
        password = Secret(value)
    with open_database(database) as db, db.engine.begin() as conn:
        grant = grant_readonly(conn, role, password)
    state = "created" if grant.created else "updated"
    login = "can log in" if grant.login else "cannot log in (NOLOGIN: GRANT it to users)"
    click.echo(
        f"role {role} {state}: reads every table and view in schema public, writes nothing; "
        f"{login}. Future tables created by {', '.join(grant.default_privileges_for)} are "
        "readable too."
    )
