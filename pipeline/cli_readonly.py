"""`ingest db grant-readonly ROLE`: a login (or group) role for analysts that can only read."""

from __future__ import annotations

import os
from typing import Any

import click

from pipeline.cli_options import build_settings, database_options
from pipeline.config import Secret
from pipeline.db.engine import open_database
from pipeline.db.readonly import grant_readonly, validate_role_name
from pipeline.errors import UsageError


@click.command("grant-readonly")
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
def grant_readonly_command(role: str, password_env: str | None, **params: Any) -> None:
    """Create or update ROLE so it can SELECT every table and view, including ones created
    later, and write nothing."""
    validate_role_name(role)
    password = None
    if password_env is not None:
        value = os.environ.get(password_env)
        if not value:
            raise UsageError(f"environment variable {password_env} is not set or is empty")
        password = Secret(value)
    database = open_database(build_settings(params))
    try:
        with database.engine.begin() as conn:
            grant = grant_readonly(conn, role, password)
    finally:
        database.engine.dispose()
    state = "created" if grant.created else "updated"
    login = "can log in" if grant.login else "cannot log in (NOLOGIN: GRANT it to users)"
    click.echo(
        f"role {role} {state}: reads every table and view in schema public, writes nothing; "
        f"{login}. Future tables created by {', '.join(grant.default_privileges_for)} are "
        "readable too."
    )


def register(db_group: click.Group) -> None:
    db_group.add_command(grant_readonly_command)
