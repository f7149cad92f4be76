#!/usr/bin/env bash
# medic's release binary and container image, by one command.
#
#   scripts/image.sh              # cargo build --release, then `docker build`
#                                 # with the Dockerfile (pulls rust:1-bookworm
#                                 # and debian:bookworm-slim from a registry)
#   scripts/image.sh --offline    # no registry: the host's release binary,
#                                 # the shared libraries it and pg_dump /
#                                 # pg_restore load, CA roots, medic.yaml and
#                                 # rules/, in an image made by `docker import`
#
# Options:
#   --tag NAME        the image's name (default medic:VERSION)
#   --binary PATH     package this medic binary instead of building one
#                     (--offline only; the test suite packages its debug build)
#   --no-default-features
#                     build without the aws and kubernetes features
#
# The image is the same either way: medic runs as uid 65532 with its state
# in /var/lib/medic, `medic run --config /etc/medic/medic.yaml` by default
# (docs/operations.md, "Container image"). DOCKER_HOST is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
tag="medic:$version"
offline=0
binary=
features=()
while (($#)); do
  case $1 in
    --offline) offline=1 ;;
    --tag) tag=$2; shift ;;
    --binary) binary=$2; shift ;;
    --no-default-features) features=(--no-default-features) ;;
    *) echo "image.sh: unknown option $1 (see the comment at the top)" >&2; exit 2 ;;
  esac
  shift
done
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

if ((!offline)); then
  [[ -z $binary ]] || { echo "image.sh: --binary goes with --offline" >&2; exit 2; }
  cargo build --release --locked "${features[@]}" --bin medic
  echo "release binary: target/release/medic"
  exec docker build --build-arg MEDIC_GIT_COMMIT="$commit" -t "$tag" .
fi

if [[ -z $binary ]]; then
  MEDIC_GIT_COMMIT=$commit cargo build --release --locked "${features[@]}" --bin medic
  binary=target/release/medic
  echo "release binary: $binary"
fi
[[ -x $binary ]] || { echo "image.sh: $binary is not an executable" >&2; exit 1; }

root=$(mktemp -d)
tarball=$(mktemp)
trap 'rm -rf "$root" "$tarball"' EXIT

# A program and every shared library it loads (and the loader), at their
# own paths under the image's root.
with_libs() {
  local prog=$1 dest=$2 lib
  install -D -m 0755 "$prog" "$root$dest"
  while read -r lib; do
    [[ -e $root$lib ]] || cp -L --parents "$lib" "$root"
  done < <(ldd "$prog" | grep -oE '/[^ ]+' | sort -u)
}

with_libs "$binary" /usr/local/bin/medic
# As the Dockerfile does: no symbols in the image (backtraces keep names).
strip "$root/usr/local/bin/medic" 2>/dev/null || true
# pg_dump and pg_restore for the backup jobs, when the host has them (the
# newest PostgreSQL's: it dumps every older server too).
pg=$(compgen -G '/usr/lib/postgresql/*/bin/pg_dump' | sort -V | tail -1 || true)
if [[ -n $pg ]]; then
  with_libs "$pg" /usr/local/bin/pg_dump
  with_libs "$(dirname "$pg")/pg_restore" /usr/local/bin/pg_restore
else
  echo "image.sh: no pg_dump on this host; the image's backup jobs will fail" >&2
fi
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
else
  echo "image.sh: no CA roots on this host (ca-certificates); the image's TLS clients will fail" >&2
fi
install -D -m 0644 medic.yaml "$root/etc/medic/medic.yaml"
cp -r rules "$root/etc/medic/rules"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nmedic:x:65532:65532:medic:/var/lib/medic:/usr/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nmedic:x:65532:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
install -d -m 1777 "$root/tmp"
install -d -m 0700 "$root/var/lib/medic"

# Everything root's but the state directory, which is medic's.
tar --numeric-owner --owner=0 --group=0 -C "$root" --exclude=./var/lib/medic -cf "$tarball" .
tar --numeric-owner --owner=65532 --group=65532 -C "$root" -rf "$tarball" ./var/lib/medic
docker import \
    --change 'USER 65532:65532' \
    --change 'WORKDIR /var/lib/medic' \
    --change 'ENV MEDIC_STORE__SQLITE__PATH=/var/lib/medic/medic.db' \
    --change 'ENV TMPDIR=/var/lib/medic' \
    --change 'ENV PATH=/usr/local/bin' \
    --change 'EXPOSE 7460' \
    --change 'ENTRYPOINT ["/usr/local/bin/medic"]' \
    --change 'CMD ["run", "--config", "/etc/medic/medic.yaml", "--log-format", "json"]' \
    "$tarball" "$tag" >/dev/null
echo "image: $tag (offline, $(du -sh "$root" | cut -f1) unpacked)"
