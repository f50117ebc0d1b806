# shellcheck shell=bash
# Shared helpers of scripts/base-images, scripts/demo and scripts/test-examples. Sourced, not run.

# The repository root, whatever the caller's working directory.
CAIRN_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CAIRN_REPO

log() { printf '%s\n' "== $*" >&2; }
warn() { printf '%s\n' "warning: $*" >&2; }
die() {
  printf '%s\n' "error: $*" >&2
  exit 1
}

# Sets $CAIRN to the cairn binary: $CAIRN if the caller set it, else the release build, else the
# debug build. Relative paths are taken from the repository root so that scripts may cd elsewhere.
find_cairn() {
  local c="${CAIRN:-}"
  if [[ -z "$c" ]]; then
    if [[ -x "$CAIRN_REPO/target/release/cairn" ]]; then
      c="$CAIRN_REPO/target/release/cairn"
    elif [[ -x "$CAIRN_REPO/target/debug/cairn" ]]; then
      c="$CAIRN_REPO/target/debug/cairn"
    else
      die "no cairn binary: build it (cargo build --release -p cairn) or set CAIRN"
    fi
  fi
  [[ "$c" == /* ]] || c="$CAIRN_REPO/$c"
  [[ -x "$c" ]] || die "CAIRN=$c is not executable"
  CAIRN="$c"
  export CAIRN
}

# Global cairn flags of the script (`--root DIR` when one was given); use as "${CAIRN_ARGS[@]}".
CAIRN_ARGS=()

# Runs cairn with the script's global flags.
cairn() { "$CAIRN" "${CAIRN_ARGS[@]}" "$@"; }

# True when REF already names an image of the store. An error (e.g. `images` not implemented yet)
# counts as "absent".
image_exists() {
  local out
  out="$(cairn images -q "$1" 2>/dev/null)" || return 1
  [[ -n "$out" ]]
}

# Waits until URL answers (up to $2 seconds, default 30); prints the body on success. With $3, the
# pid of the server, fails as soon as it exits, and when something else answered in its place.
wait_http() {
  local url="$1" secs="${2:-30}" pid="${3:-}" i
  for ((i = 0; i < secs * 4; i++)); do
    if curl -fsS --max-time 2 "$url" 2>/dev/null; then
      [[ -z "$pid" ]] || kill -0 "$pid" 2>/dev/null || {
        echo " <- not from this server, which exited"
        return 1
      }
      return 0
    fi
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      echo "(the server exited)"
      return 1
    fi
    sleep 0.25
  done
  return 1
}

# Fails when something already listens on TCP PORT of the host (the examples use the host network).
port_free() {
  ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

# Size of an image in bytes, or "" if unknown: `inspect --format {{.Size}}` (bytes, as docker's),
# else `images --format {{.Size}}` (human readable, "12.3MB", decimal units) converted back.
image_size_bytes() {
  local s
  s="$(cairn inspect --format '{{.Size}}' "$1" 2>/dev/null | head -n1)" || s=""
  if [[ "$s" =~ ^[0-9]+$ ]]; then
    printf '%s\n' "$s"
    return 0
  fi
  s="$(cairn images "$1" --format '{{.Size}}' 2>/dev/null | head -n1)" || return 0
  human_to_bytes "$s"
}

# "12.3MB" → 12300000; "1.2GB" → 1200000000; "734kB"/"734KB" → 734000; "512B" → 512; a plain number
# is bytes. Prints nothing for anything else.
human_to_bytes() {
  awk -v s="$1" 'BEGIN {
    if (match(s, /^[0-9.]+/) == 0) exit
    n = substr(s, 1, RLENGTH); u = toupper(substr(s, RLENGTH + 1))
    gsub(/[ I]/, "", u)
    m = 1
    if (u == "KB" || u == "K") m = 1e3
    else if (u == "MB" || u == "M") m = 1e6
    else if (u == "GB" || u == "G") m = 1e9
    else if (u == "TB" || u == "T") m = 1e12
    else if (u != "B" && u != "") exit
    printf "%.0f\n", n * m
  }'
}

# Percentage by which SMALL is smaller than BIG (both bytes), one decimal: "98.7".
reduction_pct() {
  awk -v b="$1" -v s="$2" 'BEGIN { if (b > 0) printf "%.1f\n", (1 - s / b) * 100 }'
}

# Directory of the logs of the current script (builds, containers); set by the caller.
LOGDIR="${LOGDIR:-/tmp}"

# start_bg NAME IMAGE [CMD...]: runs IMAGE in the background as container NAME (`cairn run --rm
# --name NAME`), output to $LOGDIR/NAME.run.log; the pid of `cairn run` lands in BG_PID.
# The examples use the host network: the server's port is the host's.
BG_PID=""
BG_NAME=""
start_bg() {
  BG_NAME="$1"
  shift
  cairn run --rm --name "$BG_NAME" "$@" </dev/null >"$LOGDIR/$BG_NAME.run.log" 2>&1 &
  BG_PID=$!
}

# Stops the container of the last start_bg: `cairn stop`, else SIGTERM to `cairn run` (which passes
# it on), SIGKILL after 10 s.
stop_bg() {
  [[ -n "$BG_PID" ]] || return 0
  local i
  cairn stop "$BG_NAME" >/dev/null 2>&1 || kill -TERM "$BG_PID" 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do
    kill -0 "$BG_PID" 2>/dev/null || break
    sleep 0.25
  done
  kill -0 "$BG_PID" 2>/dev/null && kill -KILL "$BG_PID" 2>/dev/null
  wait "$BG_PID" 2>/dev/null || true
  cairn rm -f "$BG_NAME" >/dev/null 2>&1 || true
  BG_PID=""
  BG_NAME=""
}
