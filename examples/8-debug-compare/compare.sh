#!/usr/bin/env bash
# Exercise 8.2 of the tutorial with cairn in place of docker: builds the `builder` and `runtime`
# stages of the Dockerfile next to this script and compares their sizes and layers. The tutorial
# leaves the "Réduction:" line empty; this script computes it.
#
# CAIRN: the cairn binary (default: `cairn` on PATH, else the repository's release/debug build).
# CAIRN_ROOT: cairn's store (as --root).
set -euo pipefail
cd "$(dirname "$0")"

if [[ -z "${CAIRN:-}" ]]; then
  if command -v cairn >/dev/null; then CAIRN=cairn
  elif [[ -x ../../target/release/cairn ]]; then CAIRN=../../target/release/cairn
  else CAIRN=../../target/debug/cairn
  fi
fi

# Bytes of an image: `inspect --format {{.Size}}` prints bytes (as docker's); if it does not,
# `images --format {{.Size}}` prints e.g. "12.3MB" (decimal units, as docker's), converted back.
size_bytes() {
  local s
  s="$("$CAIRN" inspect --format '{{.Size}}' "$1" 2>/dev/null | head -n1)" || s=""
  [[ "$s" =~ ^[0-9]+$ ]] || s="$("$CAIRN" images "$1" --format '{{.Size}}' | head -n1)"
  awk -v s="$s" 'BEGIN {
    if (match(s, /^[0-9.]+/) == 0) exit 1
    n = substr(s, 1, RLENGTH); u = toupper(substr(s, RLENGTH + 1)); gsub(/[ I]/, "", u)
    m = (u == "KB" || u == "K") ? 1e3 : (u == "MB" || u == "M") ? 1e6 : (u == "GB" || u == "G") ? 1e9 : 1
    printf "%.0f\n", n * m
  }'
}

echo "=== Analyse multi-stage ==="

# Builder chaque stage
"$CAIRN" build --target builder -t app:builder .
"$CAIRN" build --target runtime -t app:runtime .

echo ""
echo "Stage Builder:"
"$CAIRN" images app:builder --format "  Taille: {{.Size}}"
"$CAIRN" history app:builder --quiet | wc -l | xargs echo "  Layers:"

echo ""
echo "Stage Runtime:"
"$CAIRN" images app:runtime --format "  Taille: {{.Size}}"
"$CAIRN" history app:runtime --quiet | wc -l | xargs echo "  Layers:"

echo ""
builder="$(size_bytes app:builder)"
runtime="$(size_bytes app:runtime)"
echo "Réduction: $(awk -v b="$builder" -v r="$runtime" 'BEGIN { if (b > 0) printf "%.1f%%", (1 - r / b) * 100; else printf "?" }')" \
  "($runtime octets au lieu de $builder)"
