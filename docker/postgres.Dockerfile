# PostgreSQL for the compose stack, from Debian's `postgresql` package, for machines that
# cannot pull `postgres:16` (no registry). It keeps the official image's contract: the
# POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB variables, data in /var/lib/postgresql/data,
# port 5432 (PGPORT changes it), `pg_isready` as the health check.
#
#   docker build --network host -f docker/postgres.Dockerfile -t mlproject-postgres:bookworm \
#       --build-arg BASE_IMAGE=mlproject-base:bookworm docker
#
# BASE_IMAGE: any Debian bookworm image (the debootstrap base of docker/setup_engine.sh, or
# python:3.11-slim); apt-get needs a Debian mirror at build time, as it does on the host.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN set -eu; \
    apt-get update -qq; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \
    # The package's own cluster is not used: the entry point makes one in PGDATA.
    pg_dropcluster --stop "$(ls /usr/lib/postgresql)" main; \
    ln -s /usr/lib/postgresql/*/bin/* /usr/local/bin/ 2>/dev/null || true; \
    mkdir -p /var/lib/postgresql/data /var/run/postgresql; \
    chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
ENTRYPOINT ["postgres-entrypoint"]
CMD ["postgres"]
