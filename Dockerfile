# medic's container image: build with cargo, run as a non-root user.
#   docker build --build-arg MEDIC_GIT_COMMIT=$(git rev-parse --short=12 HEAD) -t medic:0.1.0 .
# (the build context has no .git: without the argument, `medic --version`
# and medic_build_info say commit "unknown")
# The image runs `medic run` on the config at /etc/medic/medic.yaml (the
# repository's safe dry-run default; Kubernetes mounts its own there).

FROM rust:1-bookworm AS build
WORKDIR /src
# Manifests first, so dependency downloads are cached across source edits.
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY benches ./benches
ARG MEDIC_GIT_COMMIT=""
RUN MEDIC_GIT_COMMIT="$MEDIC_GIT_COMMIT" cargo build --release --locked --bin medic \
    && strip target/release/medic

FROM debian:bookworm-slim
# CA roots for TLS to targets and APIs; pg_dump and pg_restore for the
# backup jobs (PostgreSQL 15 client: dumps servers up to 15).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates postgresql-client \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 65532 medic \
    && useradd --system --uid 65532 --gid 65532 --home-dir /var/lib/medic --shell /usr/sbin/nologin medic \
    && install -d -o 65532 -g 65532 -m 0700 /var/lib/medic
COPY --from=build /src/target/release/medic /usr/local/bin/medic
COPY medic.yaml /etc/medic/medic.yaml
COPY rules /etc/medic/rules
USER 65532:65532
WORKDIR /var/lib/medic
ENV MEDIC_STORE__SQLITE__PATH=/var/lib/medic/medic.db
# The root filesystem is read-only in Kubernetes: backup jobs' scratch files
# (downloads, restore tests) go to the state volume.
ENV TMPDIR=/var/lib/medic
EXPOSE 7460
ENTRYPOINT ["/usr/local/bin/medic"]
CMD ["run", "--config", "/etc/medic/medic.yaml", "--log-format", "json"]
