#!/usr/bin/env bash
# airflow-init: the one-shot service every other Airflow service waits for
# (depends_on: condition: service_completed_successfully).
#   1. airflow db migrate (the metadata schema; also the FAB auth manager's tables)
#   2. the admin user, password from AIRFLOW_ADMIN_PASSWORD. Reset on every run, so changing the
#      variable and running `docker compose up -d` rotates it.
# Works for both auth managers: FAB (production) keeps users in the metadata database;
# the SimpleAuthManager (development override) reads a passwords file, written here.
set -euo pipefail
: "${AIRFLOW_ADMIN_USERNAME:?AIRFLOW_ADMIN_USERNAME is required}"
: "${AIRFLOW_ADMIN_PASSWORD:?AIRFLOW_ADMIN_PASSWORD is required}"

airflow db migrate

auth_manager="$(airflow config get-value core auth_manager)"
case "${auth_manager}" in
  *FabAuthManager)
    airflow users create --role Admin --username "${AIRFLOW_ADMIN_USERNAME}" \
      --firstname ShopFlow --lastname Admin --email "${AIRFLOW_ADMIN_EMAIL:-admin@example.com}" \
      --password "${AIRFLOW_ADMIN_PASSWORD}"
    airflow users reset-password --username "${AIRFLOW_ADMIN_USERNAME}" --password "${AIRFLOW_ADMIN_PASSWORD}"
    ;;
  *SimpleAuthManager)
    passwords_file="$(airflow config get-value core simple_auth_manager_passwords_file)"
    mkdir -p "$(dirname "${passwords_file}")"
    umask 077
    python -c 'import json, os, sys; json.dump({os.environ["AIRFLOW_ADMIN_USERNAME"]: os.environ["AIRFLOW_ADMIN_PASSWORD"]}, sys.stdout)' \
      > "${passwords_file}"
    echo "SimpleAuthManager: password of '${AIRFLOW_ADMIN_USERNAME}' written to ${passwords_file}"
    ;;
  *)
    echo "airflow-init: unknown auth manager '${auth_manager}': create the admin user yourself" >&2
    ;;
esac
