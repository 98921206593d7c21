#!/bin/sh
# Runs once, when the db volume is first initialised (docker-entrypoint-initdb.d).
#
# Two roles (SPEC §C2): POSTGRES_USER owns the tables and runs the migrations; the application
# (gunicorn, worker, beat) connects as POSTGRES_APP_USER, which may only SELECT, INSERT, UPDATE
# and DELETE. It owns nothing, so it cannot disable the append-only triggers, TRUNCATE, or ALTER
# a table; the triggers refuse its UPDATE and DELETE of history, signatures and the audit trail.
set -eu
psql -v ON_ERROR_STOP=1 \
  --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set app_user="$POSTGRES_APP_USER" --set app_password="$POSTGRES_APP_PASSWORD" \
  --set owner="$POSTGRES_USER" --set db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"app_user" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
  PASSWORD :'app_password';
GRANT CONNECT ON DATABASE :"db" TO :"app_user";
GRANT USAGE ON SCHEMA public TO :"app_user";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app_user";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO :"app_user";
SQL
