#!/usr/bin/env bash
# The main job in one command: start `dstack server` (with this machine as the `local` fleet) in
# the background unless one already answers, wait until the local fleet is ready, then run a first
# task with `dstack apply` and show its logs. The server keeps running afterwards:
#   stop it with: kill "$(cat ~/.dstack/server/server.pid)"
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
port="${DSTACK_SERVER_PORT:-3000}"
home_dir="${DSTACK_SERVER_DIR:-$HOME/.dstack/server}"
log="$home_dir/server.log"
config="${1:-$repo/examples/hello.dstack.yml}"
dstack() { node "$repo/cli/bin/dstack.js" "$@"; }
say() { printf 'quickstart: %s\n' "$*" >&2; }

if curl -fsS "http://127.0.0.1:$port/healthcheck" >/dev/null 2>&1; then
  say "a server already answers on port $port; using it"
else
  mkdir -p "$home_dir"
  say "starting dstack server on port $port (log: $log)"
  nohup node "$repo/server/bin/dstack-server.js" --port "$port" >"$log" 2>&1 &
  echo $! >"$home_dir/server.pid"
  for _ in $(seq 1 240); do
    grep -q "The local fleet is ready" "$log" 2>/dev/null && break
    if ! kill -0 "$(cat "$home_dir/server.pid")" 2>/dev/null; then
      say "the server exited; its log:"
      cat "$log" >&2
      exit 1
    fi
    sleep 0.25
  done
  grep -q "The local fleet is ready" "$log" || { say "the local fleet did not come up within 60 s; see $log"; exit 1; }
  grep -E "^(The admin token|The server is running|The local fleet)" "$log" >&2
fi

cd "$(dirname "$config")"
dstack apply -f "$config" -y
