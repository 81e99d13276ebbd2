#!/usr/bin/env bash
# One PostgreSQL server, two databases, four least-privilege roles.
#
#   ${AIRFLOW_DB}                Airflow metadata (and the Celery result backend), owned by ${AIRFLOW_DB_USER}
#   ${WAREHOUSE_DB}              the ShopFlow warehouse (raw, quarantine, dbt's schemas, monitoring),
#                                owned by ${SHOPFLOW_DB_USER}: ingest, dbt and the DAGs run as this role
#   ${SHOPFLOW_SERVING_DB_USER}  the Bento: INSERT/SELECT on the tables of schema monitoring, nothing else
#   ${SHOPFLOW_READER_DB_USER}   read-only on every warehouse schema, present and future (dashboards, analysts)
#
# The postgres image runs this once, on an empty data volume (/docker-entrypoint-initdb.d). It is
# idempotent and (re)sets every password from the environment, so rerunning it is also how the
# database passwords are rotated:
#   docker compose up -d postgres && docker compose exec -u postgres postgres \
#       /docker-entrypoint-initdb.d/10-shopflow.sh
# Connection comes from libpq's PG* variables (the entrypoint's local socket by default); the
# tests point it at a throwaway server-side namespace by overriding the names below.
set -euo pipefail

AIRFLOW_DB="${AIRFLOW_DB:-airflow}"
WAREHOUSE_DB="${WAREHOUSE_DB:-shopflow}"
AIRFLOW_DB_USER="${AIRFLOW_DB_USER:-airflow}"
SHOPFLOW_DB_USER="${SHOPFLOW_DB_USER:-shopflow}"
SHOPFLOW_SERVING_DB_USER="${SHOPFLOW_SERVING_DB_USER:-shopflow_serving}"
SHOPFLOW_READER_DB_USER="${SHOPFLOW_READER_DB_USER:-shopflow_reader}"
: "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD is required (password of the ${AIRFLOW_DB_USER} role)}"
: "${SHOPFLOW_DB_PASSWORD:?SHOPFLOW_DB_PASSWORD is required (password of the ${SHOPFLOW_DB_USER} role)}"
: "${SHOPFLOW_SERVING_DB_PASSWORD:?SHOPFLOW_SERVING_DB_PASSWORD is required (password of the ${SHOPFLOW_SERVING_DB_USER} role)}"
: "${SHOPFLOW_READER_DB_PASSWORD:?SHOPFLOW_READER_DB_PASSWORD is required (password of the ${SHOPFLOW_READER_DB_USER} role)}"

run_psql() {
  psql -X -q -v ON_ERROR_STOP=1 \
    --username "${POSTGRES_USER:-${PGUSER:-postgres}}" \
    -v airflow_db="$AIRFLOW_DB" -v warehouse_db="$WAREHOUSE_DB" \
    -v airflow_user="$AIRFLOW_DB_USER" -v airflow_password="$AIRFLOW_DB_PASSWORD" \
    -v owner="$SHOPFLOW_DB_USER" -v owner_password="$SHOPFLOW_DB_PASSWORD" \
    -v serving="$SHOPFLOW_SERVING_DB_USER" -v serving_password="$SHOPFLOW_SERVING_DB_PASSWORD" \
    -v reader="$SHOPFLOW_READER_DB_USER" -v reader_password="$SHOPFLOW_READER_DB_PASSWORD" \
    "$@"
}

# --- roles and databases (cluster level) ---------------------------------------------------------
run_psql --dbname "${POSTGRES_DB:-${PGDATABASE:-postgres}}" <<'SQL'
-- Create each role once, then (re)set its password: rerunning rotates them.
SELECT format('CREATE ROLE %I LOGIN', r) FROM unnest(ARRAY[:'airflow_user', :'owner', :'serving', :'reader']) AS r
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) \gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', :'airflow_user', :'airflow_password') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', :'owner', :'owner_password') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', :'serving', :'serving_password') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', :'reader', :'reader_password') \gexec

SELECT format('CREATE DATABASE %I OWNER %I', :'airflow_db', :'airflow_user')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'airflow_db') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'warehouse_db', :'owner')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'warehouse_db') \gexec

-- Only the named roles may connect: nobody reaches the other service's database.
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'airflow_db') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'warehouse_db') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I, %I', :'warehouse_db', :'serving', :'reader') \gexec
SQL

# --- inside the warehouse ----------------------------------------------------------------------------
run_psql --dbname "$WAREHOUSE_DB" <<'SQL'
SET client_min_messages = warning;
-- The owner builds everything (ingest's raw/quarantine, dbt's schemas); nobody else creates.
SELECT format('ALTER SCHEMA public OWNER TO %I', :'owner') \gexec
REVOKE ALL ON SCHEMA public FROM PUBLIC;
SELECT format('GRANT USAGE ON SCHEMA public TO %I', :'reader') \gexec
SELECT format('CREATE SCHEMA IF NOT EXISTS monitoring AUTHORIZATION %I', :'owner') \gexec

-- Serving: write and read back request/prediction logs in monitoring.*, nothing else. Tables there
-- are created by the owner (the monitoring stage), so the grants follow by default privileges.
SELECT format('GRANT USAGE ON SCHEMA monitoring TO %I', :'serving') \gexec
SELECT format('GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA monitoring TO %I', :'serving') \gexec
SELECT format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA monitoring TO %I', :'serving') \gexec
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA monitoring GRANT SELECT, INSERT ON TABLES TO %I',
              :'owner', :'serving') \gexec
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA monitoring GRANT USAGE ON SEQUENCES TO %I',
              :'owner', :'serving') \gexec

-- Reader: SELECT on every schema the owner has or will create (dbt creates staging/marts later).
SELECT format('GRANT USAGE ON SCHEMA %I TO %I', nspname, :'reader')
  FROM pg_namespace WHERE nspowner = (SELECT oid FROM pg_roles WHERE rolname = :'owner') \gexec
SELECT format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO %I', nspname, :'reader')
  FROM pg_namespace WHERE nspowner = (SELECT oid FROM pg_roles WHERE rolname = :'owner') \gexec
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT USAGE ON SCHEMAS TO %I', :'owner', :'reader') \gexec
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT SELECT ON TABLES TO %I', :'owner', :'reader') \gexec
SQL

# --- inside the Airflow metadata database -----------------------------------------------------------
run_psql --dbname "$AIRFLOW_DB" <<'SQL'
SELECT format('ALTER SCHEMA public OWNER TO %I', :'airflow_user') \gexec
REVOKE ALL ON SCHEMA public FROM PUBLIC;
SQL

echo "shopflow init: databases ${AIRFLOW_DB} (owner ${AIRFLOW_DB_USER}) and ${WAREHOUSE_DB} (owner ${SHOPFLOW_DB_USER});" \
  "roles ${SHOPFLOW_SERVING_DB_USER} (monitoring insert/select) and ${SHOPFLOW_READER_DB_USER} (read-only)"
