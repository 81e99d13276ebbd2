"""``[core] hostname_callable`` for local Celery workers: the worker's name, else the FQDN.

A module of its own that imports nothing of ShopFlow: Airflow imports the callable into each
long-lived worker process, and task processes are forked from it. Had it imported
``ml.core.settings``, every task of that worker would run with the settings module as it was when
the worker started, whatever the code says now (seen: a task failed on a settings field added
after the worker started).
"""

from __future__ import annotations

import os
import socket

WORKER_NAME_ENV = "SHOPFLOW_CELERY_WORKER_NAME"
"""Set in each local worker's environment (``ml.ops.celery_local``)."""


def worker_hostname() -> str:
    """The worker's name from :data:`WORKER_NAME_ENV`, else this machine's FQDN.

    All workers of one machine share its FQDN; the name tells them apart in ``task_instance.hostname``.
    """
    return os.environ.get(WORKER_NAME_ENV) or socket.getfqdn()
