#!/usr/bin/env bash
# Base images for the lab, made from Debian packages because no container registry is reachable:
#   bluegreen-lab/debian:bookworm  debootstrap (python3, nginx, curl) + docker import; the lab app's base
#   python:3.12-slim               a local stand-in so the action's production Dockerfile builds unchanged
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=/var/cache/bluegreen-lab

if ! docker image inspect bluegreen-lab/debian:bookworm >/dev/null 2>&1; then
  echo "images: debootstrap bookworm (about a minute)"
  mkdir -p "$cache"
  if [ ! -f "$cache/rootfs/.complete" ]; then
    rm -rf "$cache/rootfs"
    debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates,nginx-light,curl,procps \
      bookworm "$cache/rootfs" http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1 \
      || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
    touch "$cache/rootfs/.complete"
  fi
  tar -C "$cache/rootfs" --exclude=./.complete -c . | docker import - bluegreen-lab/debian:bookworm >/dev/null
fi

if ! docker image inspect python:3.12-slim >/dev/null 2>&1 \
   || [ "$(docker image inspect -f '{{index .Config.Labels "bluegreen-lab.stand-in"}}' python:3.12-slim)" != "1" ]; then
  echo "images: tagging the python:3.12-slim stand-in"
  ctx=$(mktemp -d)
  cp "$here/standin.Dockerfile" "$ctx/Dockerfile"
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
  docker build --quiet --network host -t python:3.12-slim "$ctx" >/dev/null
  rm -rf "$ctx"
fi
