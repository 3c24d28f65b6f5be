#!/usr/bin/env bash
# Start Debian's PostgreSQL and create a role and database for the tracking-server tests.
#
#   eval "$(bash docker/setup_postgres.sh)"    # exports MLPROJECT_TEST_PG_URI
#
# Installs the `postgresql` package when missing (root), starts the first cluster with
# pg_ctlcluster, and (re)creates role and database `mlproject_test`, listening on 127.0.0.1
# only. Progress goes to stderr; stdout is the one `export` line.
set -euo pipefail

ROLE=${PG_TEST_ROLE:-mlproject_test}
PASSWORD=${PG_TEST_PASSWORD:-mlproject_test}
DB=${PG_TEST_DB:-mlproject_test}

if ! command -v pg_lsclusters >/dev/null 2>&1; then
    echo "setup_postgres: installing postgresql" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
read -r version cluster port status _ < <(pg_lsclusters --no-header | head -n 1)
if [ "$status" != "online" ]; then
    pg_ctlcluster "$version" "$cluster" start >&2
fi
for _ in $(seq 1 30); do
    su postgres -c "pg_isready -q -p $port" && break
    sleep 1
done
psql_admin() { su postgres -c "PGOPTIONS=--client-min-messages=warning psql -v ON_ERROR_STOP=1 -q -p $port $*" >&2; }
psql_admin "-c \"DROP DATABASE IF EXISTS $DB\""
psql_admin "-c \"DROP ROLE IF EXISTS $ROLE\""
psql_admin "-c \"CREATE ROLE $ROLE LOGIN PASSWORD '$PASSWORD'\""
psql_admin "-c \"CREATE DATABASE $DB OWNER $ROLE\""
echo "setup_postgres: PostgreSQL $version on 127.0.0.1:$port, database $DB" >&2
echo "export MLPROJECT_TEST_PG_URI=postgresql://$ROLE:$PASSWORD@127.0.0.1:$port/$DB"
