"""Every command and option explains itself (STYLE.md habit 3), and help reads well."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from pipeline.cli.app import cli


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, f"{path} "))
    return found


COMMANDS = _commands(cli)


def test_the_documented_commands_exist() -> None:
    names = {name for name, _ in COMMANDS}
    expected = {
        "run",
        "demo",
        "refresh",
        "reprocess",
        "runs",
        "failures",
        "db",
        "db upgrade",
        "db current",
        "db url",
        "db psql",
        "db grant-readonly",
    }
    assert expected <= names


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_command_and_option_has_help(name: str, command: click.Command) -> None:
    assert command.help, f"`ingest {name}` has no help text"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"`ingest {name}` option {param.opts} has no help text"


@pytest.mark.parametrize("name", [n for n, _ in COMMANDS])
def test_help_renders(name: str) -> None:
    result = CliRunner().invoke(cli, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output


def test_top_level_help_reads_well() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    out = result.output
    for needle in ("ingest urls.txt", "demo", "refresh", "Exit codes", "75"):
        assert needle in out


def test_a_file_name_is_the_default_action() -> None:
    result = CliRunner().invoke(cli, ["urls.txt", "--dry-run"])
    # urls.txt does not exist: the run command (not "no such command") reports it.
    assert "cannot read input file" in str(result.exception) or result.exit_code != 0
    assert "No such command" not in result.output


def test_readme_documents_every_option_of_the_main_command_and_every_exit_code() -> None:
    import re
    from pathlib import Path

    import pipeline.cli as cli_module

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(--[a-z-]+)[ `/]", readme, flags=re.M))
    documented |= {"--quiet", "--verbose"} if "`-q` / `-v`" in readme else set()
    run = cli.commands["run"]
    options = {
        opt
        for p in run.params
        if isinstance(p, click.Option)
        for opt in p.opts
        if opt.startswith("--") and opt != "--help"
    }
    # "--progress/--no-progress" is one row in the table.
    documented |= {"--no-progress"} if "--progress" in documented else set()
    assert options - documented == set(), "options missing from the README table"
    codes = {getattr(cli_module, name) for name in dir(cli_module) if name.startswith("EXIT_")}
    table_codes = {int(c) for c in re.findall(r"^\| (\d+) \|", readme, flags=re.M)}
    assert codes == table_codes, "exit codes in README differ from pipeline/cli/exits.py"
