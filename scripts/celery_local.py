"""Run Airflow under CeleryExecutor on this machine, without containers, until Ctrl-C.

The production executor of docker-compose.yml on the local servers: the metadata DB is a new
PostgreSQL database (dropped on exit unless --metadata-dsn names one to keep), the broker a Redis
database this run claims (8-15, flushed on exit), and scheduler, API server, DAG processor and
Celery workers (by default two on queue ``default`` and one on ``gpu``) run as processes here.
ShopFlow's settings come from the environment as usual (SHOPFLOW_WAREHOUSE=postgres for the
production warehouse; SHOPFLOW_TRAINING_QUEUE=gpu to send training to the gpu worker).

    .venv/bin/python scripts/celery_local.py --help
    SHOPFLOW_WAREHOUSE=postgres SHOPFLOW_TRAINING_QUEUE=gpu SHOPFLOW_PII_SALT=... \\
        .venv/bin/python scripts/celery_local.py --workers default-1=default default-2=default gpu-1=gpu
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.core.settings import get_settings
from ml.ops.celery_local import (
    DEFAULT_WORKERS,
    PG_SERVER,
    REDIS_URL,
    CeleryAirflow,
    CeleryWorker,
    metadata_url,
    throwaway_metadata_db,
)


def parse_worker(text: str) -> CeleryWorker:
    """``NAME=QUEUE[,QUEUE...]`` → a worker."""
    name, sep, queues = text.partition("=")
    if not sep or not name or not queues:
        raise argparse.ArgumentTypeError(f"worker {text!r}: expected NAME=QUEUE[,QUEUE...], e.g. gpu-1=gpu")
    return CeleryWorker(name, tuple(q for q in queues.split(",") if q))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Stop with Ctrl-C: workers, components and the throwaway metadata DB go away.",
    )
    parser.add_argument(
        "--workers", nargs="+", type=parse_worker, default=list(DEFAULT_WORKERS), metavar="NAME=QUEUES",
        help="Celery workers to start (default: default-1=default default-2=default gpu-1=gpu)",
    )  # fmt: skip
    parser.add_argument(
        "--metadata-dsn",
        help="PostgreSQL DSN of Airflow's metadata DB to use and keep "
        f"(default: a throwaway database on {PG_SERVER}, dropped on exit)",
    )
    parser.add_argument(
        "--pg-server", default=PG_SERVER, help=f"server for the throwaway DB (default {PG_SERVER})"
    )
    parser.add_argument(
        "--redis-url", default=REDIS_URL, help=f"Redis server of the broker (default {REDIS_URL})"
    )
    parser.add_argument("--port", type=int, default=None, help="API server / UI port (default: a free one)")
    parser.add_argument(
        "--heartbeat-timeout", type=float, default=None,
        help="[scheduler] task_instance_heartbeat_timeout in seconds (default Airflow's 300)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    @contextlib.contextmanager
    def metadata() -> Iterator[str]:
        if args.metadata_dsn:
            yield args.metadata_dsn
        else:
            with throwaway_metadata_db(args.pg_server) as dsn:
                yield dsn

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with metadata() as dsn:
        settings = get_settings().model_copy(update={"airflow_database_url": metadata_url(dsn)})
        airflow = CeleryAirflow(
            settings,
            workers=tuple(args.workers),
            redis_url=args.redis_url,
            api_port=args.port,
            heartbeat_timeout_s=args.heartbeat_timeout,
        )
        with airflow:
            queues = airflow.worker_queues()
            print(
                f"Airflow (CeleryExecutor) at {airflow.base_url}  metadata DB {dsn}  "
                f"broker {airflow.broker_url}"
            )
            for name, consumed in sorted(queues.items()):
                print(f"  worker {name}: queues {', '.join(consumed)}")
            print(f"  warehouse: {settings.warehouse}; training queue: {settings.training_queue}")
            print(f"  logs: {airflow.log_dir}  (Ctrl-C to stop)")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    airflow._check_alive()
                    time.sleep(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
