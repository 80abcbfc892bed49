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

if ! docker image inspect nginx:1.27-alpine >/dev/null 2>&1 \
   || [ "$(docker image inspect -f '{{index .Config.Labels "bluegreen-lab.stand-in"}}' nginx:1.27-alpine)" != "1" ]; then
  echo "images: tagging the nginx:1.27-alpine stand-in"
  docker build --quiet -t nginx:1.27-alpine -f "$here/nginx-standin.Dockerfile" "$here" >/dev/null
fi

# The separate-host lab (lab/hosts.py): a machine image with its own dockerd, sshd, git and both
# Composes' needs (Debian's v1; v2 is the lab's plugin, mounted in), from Debian packages.
init_sum=$(sha256sum "$here/host-init.sh" | cut -c1-16)
if [ "$(docker image inspect -f '{{index .Config.Labels "bluegreen-lab.init"}}' bluegreen-lab/host:bookworm 2>/dev/null)" \
     != "$init_sum" ]; then
  echo "images: debootstrap the lab host (docker.io, openssh-server, git; about two minutes)"
  rootfs="$cache/host-rootfs"
  if [ ! -f "$rootfs/.complete" ]; then
    rm -rf "$rootfs"
    debootstrap --variant=minbase \
      --include=docker.io,docker-compose,iptables,openssh-server,git,curl,procps,ca-certificates,python3 \
      bookworm "$rootfs" http://deb.debian.org/debian >"$cache/host-debootstrap.log" 2>&1 \
      || { tail -20 "$cache/host-debootstrap.log" >&2; exit 1; }
    touch "$rootfs/.complete"
  fi
  install -m 0755 "$here/host-init.sh" "$rootfs/usr/local/sbin/lab-host-init"
  tar -C "$rootfs" --exclude=./.complete -c . \
    | docker import --change 'CMD ["/usr/local/sbin/lab-host-init"]' --change "LABEL bluegreen-lab.init=$init_sum" \
      - bluegreen-lab/host:bookworm >/dev/null
fi
