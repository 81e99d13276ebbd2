"""The CLI: --help on every command, registry commands against a real store, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ml import registry
from ml.cli import app
from ml.core.settings import Settings, get_settings

runner = CliRunner()
COMMANDS = [
    [], ["replay"], ["ingest"], ["validate-raw"], ["transform"], ["validate-marts"], ["run-interval"],
    ["summary"], ["demo"], ["train"], ["settings"], ["models"], ["models", "list"], ["models", "show"],
    ["models", "promote"], ["models", "rollback"],
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "shopflow")
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and len(result.output.splitlines()) > 5


@pytest.fixture
def cli_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
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
