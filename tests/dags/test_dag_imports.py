"""The DAG files' import rules: parse-time helpers at top level, one stage package per task.

The DAG processor imports every DAG file again and again, so a DAG file's top level may import
only the light parse-time helpers; each task imports the one stage package whose function it
calls, when it runs. (Package-to-package rules are import-linter's, in `.importlinter`.)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from ml.core.settings import PROJECT_DIR

DAGS_DIR = PROJECT_DIR / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if p.name != "shopflow_assets.py")
FIRST_PARTY = ("ml", "serving", "expectations", "shopflow_assets")
PARSE_TIME = {"ml.ops.dag_helpers", "ml.core.settings", "ml.core.calendar", "shopflow_assets"}
HEAVY = ("torch", "pandas", "numpy", "transformers", "great_expectations", "bentoml", "evidently", "duckdb")


def _first_party(node: ast.AST) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [node.module] if node.module.startswith(FIRST_PARTY) else []
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith(FIRST_PARTY)]
    return []


def _stage(module: str) -> str:
    """The stage package of a module: ``ml.data.quality.raw`` → ``ml.data``."""
    return ".".join(module.split(".")[:2])


def test_there_are_dag_files() -> None:
    assert [p.stem for p in DAG_FILES] == [
        "finetune_generator",
        "ingest_transform_validate",
        "monitor_drift",
        "train_recommender",
    ]


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_top_level_imports_only_parse_time_helpers(path: Path) -> None:
    tree = ast.parse(path.read_text())
    top = {m for node in tree.body for m in _first_party(node)}
    assert top <= PARSE_TIME, f"{path.name} imports {sorted(top - PARSE_TIME)} at parse time"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_each_task_imports_one_stage_package(path: Path) -> None:
    tree = ast.parse(path.read_text())
    tasks = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and any("task" in ast.unparse(d) for d in node.decorator_list)
    ]
    assert tasks, f"{path.name} has no @task functions"
    for task in tasks:
        stages = {_stage(m) for node in ast.walk(task) for m in _first_party(node)}
        assert len(stages) <= 1, f"{path.name}:{task.name} reaches into {sorted(stages)}"


def test_parsing_the_dags_loads_no_heavy_library() -> None:
    # One fresh interpreter for all of them: Airflow's own import is most of the cost.
    probe = (
        "import sys, importlib; sys.path.insert(0, sys.argv[1])\n"
        "for name in sys.argv[2:]: importlib.import_module(name)\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(DAGS_DIR), *(p.stem for p in DAG_FILES)],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert loaded == "", f"parsing the DAG files loads {loaded}"
