"""The CLI: exactly the expected commands, help text on every command and parameter, --help on each,
registry commands against a real store, clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from ml import registry
from ml.cli import app
from ml.core.settings import Settings, get_settings

runner = CliRunner()

# Every command of the app, sub-apps' commands as paths ("models", "list"). Adding, renaming or
# removing a command without updating this set fails test_registered_commands_are_the_expected_ones.
EXPECTED_COMMANDS = {
    ("replay",), ("land",), ("ingest",), ("validate-raw",), ("transform",), ("validate-marts",),
    ("run-interval",), ("summary",), ("demo",), ("train",), ("monitor",), ("settings",), ("models",),
    ("models", "list"), ("models", "show"), ("models", "promote"), ("models", "rollback"),
    ("reports",), ("generator",), ("generator", "finetune"), ("generator", "status"),
}  # fmt: skip


def _registered(command: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """The app's commands as typer builds them: the root group and every (sub-)command, by path."""
    found = {path: command}
    for name, sub in getattr(command, "commands", {}).items():  # a group; a plain command has none
        found.update(_registered(sub, (*path, name)))
    return found


REGISTERED = _registered(typer.main.get_command(app))
_ids = " ".join


def test_registered_commands_are_the_expected_ones() -> None:
    registered = set(REGISTERED) - {()}
    assert registered == EXPECTED_COMMANDS, (
        f"unexpected: {sorted(registered - EXPECTED_COMMANDS)}, "
        f"missing: {sorted(EXPECTED_COMMANDS - registered)}"
    )


@pytest.mark.parametrize("path", sorted(REGISTERED), ids=lambda p: _ids(p) or "shopflow")
def test_every_command_and_parameter_has_help_text(path: tuple[str, ...]) -> None:
    command = REGISTERED[path]
    assert (command.help or "").strip(), f"{_ids(path) or 'shopflow'} has no help text"
    for param in command.params:
        assert (param.help or "").strip(), f"{_ids(path) or 'shopflow'}: {param.name} has no help text"


@pytest.mark.parametrize("path", sorted(REGISTERED), ids=lambda p: _ids(p) or "shopflow")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and len(result.output.splitlines()) > 5
    command = REGISTERED[path]
    for option in (p for p in command.params if p.param_type_name == "option"):
        assert option.opts[0] in result.output, f"{option.opts[0]} missing from --help"
    for name in getattr(command, "commands", {}):
        assert name in result.output, f"sub-command {name} missing from --help"


@pytest.fixture
def cli_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("SHOPFLOW_WORK_DIR", str(settings.work_dir))
    monkeypatch.setenv("SHOPFLOW_PII_SALT", "test-salt")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_models_list_promote_rollback(cli_settings: Settings, tmp_path: Path) -> None:
    tags = []
    for name, ndcg in (("a", 0.02), ("b", 0.03)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "w").write_text(name)
        tags.append(
            registry.register(
                folder,
                metrics={"validation": {"ndcg@10": ndcg}},
                config={},
                lineage={},
                settings=cli_settings,
            ).tag
        )
    assert runner.invoke(app, ["models", "promote", tags[0]]).exit_code == 0
    assert runner.invoke(app, ["models", "promote", tags[1], "--reason", "better"]).exit_code == 0
    listing = runner.invoke(app, ["models", "list"]).output.splitlines()
    assert listing[1].startswith(f"  {tags[0]}") and listing[2].startswith(f"* {tags[1]}")
    assert "0.0300" in listing[2]
    rolled = runner.invoke(app, ["models", "rollback"])
    assert rolled.exit_code == 0 and tags[0] in rolled.output
    missing = runner.invoke(app, ["models", "show", "nope"])
    assert missing.exit_code == 1 and "no model 'shopflow_recommender:nope'" in missing.output


def test_ingest_error_names_the_file(cli_settings: Settings) -> None:
    bad = cli_settings.landing_dir / "beauty" / "interactions" / "2013-10-01.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("user,item_id,timestamp\nu,i,2013-10-02\n")
    result = runner.invoke(app, ["ingest", "2013-10-01", "2013-11-01"])
    assert result.exit_code == 1
    assert str(bad) in result.output and "user_id" in result.output
