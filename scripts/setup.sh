#!/usr/bin/env bash
# Prepares a Debian 12 host to build and test dstack-ts. Safe to run again and again: each step
# checks first and does nothing when its work is already done. Used by the README and by CI.
#
#   1. installs the Debian packages that are missing (apt-get update only if something is);
#   2. starts dockerd in the background when no Docker engine answers (no systemd needed);
#   3. starts PostgreSQL and makes postgresql://dstack:dstack@127.0.0.1:5432/dstack_test;
#   4. runs `npm ci` when node_modules is missing or older than package-lock.json;
#   5. builds the local test images (scripts/make-test-images.sh) and runs one container.
#
# Run as root. Environment knobs:
#   DSTACK_DOCKERD_FLAGS   extra dockerd flags; when set, only these are tried
#   DSTACK_DOCKERD_LOG     dockerd's log file (default /var/log/dstack-dockerd.log)
#   DSTACK_SETUP_SKIP_PG=1 / DSTACK_SETUP_SKIP_NPM=1   skip those steps
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"

say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (apt-get, dockerd and PostgreSQL need it): sudo bash scripts/setup.sh"

# ---------------------------------------------------------------------------------------------
# 1. Debian packages
# ---------------------------------------------------------------------------------------------
packages=(
  docker.io containerd runc iptables  # the engine
  iproute2                             # ip, ss
  openssh-client openssh-server        # SSH fleet tests, real `ssh` against the shim
  git                                  # repo/code handling
  libsqlite3-dev g++ make python3      # sqlite3, node-pty, ssh2 build with node-gyp
  busybox-static                       # dstack-test/busybox:1
  bash dash coreutils grep sed tar gzip findutils libc-bin  # dstack-test/glibc:1 is made of these
  postgresql postgresql-client         # the server's PostgreSQL tests
  ca-certificates
)
missing=()
for p in "${packages[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
  [ "$status" = "install ok installed" ] || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/dstack-setup-apt.log 2>&1 ||
    { tail -n 30 /tmp/dstack-setup-apt.log >&2; die "apt-get install failed (log: /tmp/dstack-setup-apt.log)"; }
else
  say "Debian packages present"
fi

command -v node >/dev/null 2>&1 || die "node is not installed; dstack-ts needs Node >= 20.11"
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=11)?0:1)' ||
  die "Node $(node --version) is too old; dstack-ts needs Node >= 20.11"


# ---------------------------------------------------------------------------------------------
# 2. Docker engine
# ---------------------------------------------------------------------------------------------
DOCKERD_LOG="${DSTACK_DOCKERD_LOG:-/var/log/dstack-dockerd.log}"
DOCKERD_PIDFILE=/var/run/dstack-dockerd.pid

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }
# alive PID: the process exists and is not a zombie (kill -0 succeeds on an unreaped child).
alive() { local st; st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" && [ -n "$st" ] && [ "$st" != Z ]; }

# start_dockerd FLAGS...: starts dockerd detached from this shell (own session, all descriptors
# on the log file, so a CI runner waiting on our stdout does not wait on dockerd), then waits up to
# 40 s for `docker info`. Returns 1 if dockerd exits or does not answer in time.
start_dockerd() {
  local pid i
  echo "=== $(date -u +%FT%TZ) dockerd $*" >>"$DOCKERD_LOG"
  setsid dockerd "$@" </dev/null >>"$DOCKERD_LOG" 2>&1 &
  pid=$!
  for i in $(seq 1 80); do
    if engine_answers; then
      echo "$pid" >"$DOCKERD_PIDFILE"
      return 0
    fi
    if ! alive "$pid"; then
      wait "$pid" 2>/dev/null || true
      return 1
    fi
    sleep 0.5
  done
  say "dockerd did not answer within 40 s; stopping it"
  kill "$pid" 2>/dev/null || true
  for i in $(seq 1 20); do alive "$pid" || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  return 1
}

if engine_answers; then
  say "Docker engine answers ($(docker version -f '{{.Server.Version}}' 2>/dev/null))"
else
  command -v dockerd >/dev/null 2>&1 || die "dockerd not found (package docker.io)"
  # Without systemd nobody may have mounted the cgroup hierarchies runc needs (these VMs do it at
  # boot; a bare container or chroot does not).
  if [ ! -e /sys/fs/cgroup/cgroup.controllers ] && [ ! -d /sys/fs/cgroup/devices ]; then
    if ! command -v cgroupfs-mount >/dev/null 2>&1; then
      say "installing cgroupfs-mount"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends cgroupfs-mount >/dev/null 2>&1 ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends cgroupfs-mount >/dev/null; }
    fi
    say "mounting cgroup hierarchies (cgroupfs-mount)"
    cgroupfs-mount
  fi
  # A previous dockerd killed hard leaves its pid file behind; dockerd refuses to start while the
  # file names a live process, so only remove it when that process is gone.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid 2>/dev/null)" 2>/dev/null; then
    rm -f /var/run/docker.pid
  fi
  # From most to least capable. The defaults (overlay2, bridge docker0 with iptables NAT) work on
  # these machines. If the kernel lacks netfilter, dockerd dies creating its NAT chains: retry with
  # iptables off (containers still get docker0 and reach the host at its gateway address). The
  # last resort also uses the vfs storage driver, for hosts where /var/lib/docker is itself on
  # overlayfs, and no bridge (containers then need --network host or none).
  if [ -n "${DSTACK_DOCKERD_FLAGS:-}" ]; then
    attempts=("$DSTACK_DOCKERD_FLAGS")
  else
    attempts=(
      ""
      "--iptables=false --ip6tables=false"
      "--iptables=false --ip6tables=false --storage-driver=vfs"
      "--iptables=false --ip6tables=false --storage-driver=vfs --bridge=none"
    )
  fi
  started=0
  for flags in "${attempts[@]}"; do
    say "starting dockerd ${flags:-(default flags)}; log: $DOCKERD_LOG"
    # shellcheck disable=SC2086  # flags are words on purpose
    if start_dockerd $flags; then started=1; break; fi
    say "dockerd ${flags:-(default flags)} failed; last log lines:"
    tail -n 5 "$DOCKERD_LOG" | sed 's/^/    /' >&2
  done
  [ "$started" = 1 ] || die "could not start dockerd with any flag set; see $DOCKERD_LOG"
  say "Docker engine answers ($(docker version -f '{{.Server.Version}}' 2>/dev/null), storage $(docker info -f '{{.Driver}}' 2>/dev/null))"
fi

# ---------------------------------------------------------------------------------------------
# 3. PostgreSQL: role dstack/dstack, database dstack_test on 127.0.0.1:5432
# ---------------------------------------------------------------------------------------------
if [ "${DSTACK_SETUP_SKIP_PG:-0}" != 1 ]; then
  pg_url="postgresql://dstack:dstack@127.0.0.1:5432/dstack_test"
  # The cluster listening on 5432, else the newest one, else a new one.
  cluster="$(pg_lsclusters -h 2>/dev/null | awk '$3 == 5432 {print $1, $2; exit}')"
  if [ -z "$cluster" ]; then
    cluster="$(pg_lsclusters -h 2>/dev/null | awk '{print $1, $2}' | tail -n 1)"
  fi
  if [ -z "$cluster" ]; then
    ver="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
    say "creating PostgreSQL $ver cluster main on port 5432"
    pg_createcluster --port 5432 "$ver" main >/dev/null
    cluster="$ver main"
  fi
  read -r pg_ver pg_name <<<"$cluster"
  pg_port="$(pg_lsclusters -h | awk -v v="$pg_ver" -v n="$pg_name" '$1 == v && $2 == n {print $3}')"
  [ "$pg_port" = 5432 ] || die "PostgreSQL cluster $pg_ver/$pg_name listens on $pg_port, not 5432"
  if ! pg_lsclusters -h | awk -v v="$pg_ver" -v n="$pg_name" '$1 == v && $2 == n {print $4}' | grep -q online; then
    say "starting PostgreSQL $pg_ver/$pg_name"
    pg_ctlcluster "$pg_ver" "$pg_name" start
  fi
  for i in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    [ "$i" = 60 ] && die "PostgreSQL does not accept connections on 127.0.0.1:5432"
    sleep 0.5
  done
  runuser -u postgres -- psql -q -X -v ON_ERROR_STOP=1 -d postgres >/dev/null <<'SQL'
SELECT 'CREATE ROLE dstack LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dstack')\gexec
ALTER ROLE dstack WITH LOGIN CREATEDB PASSWORD 'dstack';
-- The tests drop their databases WITH (FORCE), which must also end an autovacuum worker there.
GRANT pg_signal_backend TO dstack;
SELECT 'CREATE DATABASE dstack_test OWNER dstack' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'dstack_test')\gexec
ALTER DATABASE dstack_test OWNER TO dstack;
SQL
  PGPASSWORD=dstack PGCONNECT_TIMEOUT=5 psql -q -X -At "$pg_url" -c 'select 1' >/dev/null ||
    die "cannot connect to $pg_url"
  say "PostgreSQL ready: $pg_url"
fi

# ---------------------------------------------------------------------------------------------
# 4. Node dependencies
# ---------------------------------------------------------------------------------------------
if [ "${DSTACK_SETUP_SKIP_NPM:-0}" != 1 ]; then
  # npm keeps its own copy of the lock file in node_modules; it is older than package-lock.json
  # when the lock changed since the last install.
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    say "npm ci (sqlite3 links Debian's libsqlite3)"
    npm_config_sqlite=/usr npm ci --no-audit --no-fund --loglevel=error
  else
    say "node_modules up to date"
  fi
fi

# ---------------------------------------------------------------------------------------------
# 5. Test images, and one container to prove the engine runs them
# ---------------------------------------------------------------------------------------------
bash "$repo/scripts/make-test-images.sh"
out="$(docker run --rm dstack-test/busybox:1 echo container-ok 2>&1)" && [ "$out" = container-ok ] ||
  die "the engine answers but cannot run a container: $out (dockerd log: $DOCKERD_LOG)"
(cd "$repo" && node_modules/.bin/tsx scripts/build-runner-bundle.ts) || die "building the runner bundle failed (npm run build:runner)"
(cd "$repo" && node_modules/.bin/tsx scripts/build-shim-bundle.ts) || die "building the shim bundle failed (npm run build:shim)"
(cd "$repo" && node_modules/.bin/tsx scripts/build-cli.ts) || die "bundling the CLI failed (npm run build:cli)"
say "done"
