#!/usr/bin/env bash
# A faithful re-creation of the seed's scripts/blue-green-deploy.sh, the baseline of the benchmark.
# Its six steps and their faults are kept as they were; only the values the seed hard-coded for its
# one host come from the environment: NGINX (container), BLUE_URLS / GREEN_URLS (health URLs), and
# COMPOSE (docker-compose, or "docker compose" on a host with only v2).
# Do not use it to deploy: it is here to be measured against.
set -e
cd "$(dirname "$0")/.."
COMPOSE=${COMPOSE:-docker-compose}

# 1. pull
git pull --quiet origin main

# 2. shared infra, never restarted
$COMPOSE -f docker-compose.base.yml up -d

# 3. the live color from .active_env; build and start the other one
ACTIVE=$(cat .active_env 2>/dev/null || echo green)
if [ "$ACTIVE" = "blue" ]; then NEW=green; URLS=$GREEN_URLS; else NEW=blue; URLS=$BLUE_URLS; fi
$COMPOSE -f "docker-compose.$NEW.yml" up -d --build

# 4. health: 30 tries per URL
for url in $URLS; do
  ok=0
  for _ in $(seq 1 30); do
    if curl -fsS -o /dev/null "$url"; then ok=1; break; fi
    sleep 2
  done
  if [ "$ok" != 1 ]; then
    echo "health check failed: $url" >&2
    $COMPOSE -f "docker-compose.$NEW.yml" down
    exit 1
  fi
done

# 5. switch the upstream and test it
cp "nginx/upstream.$NEW.conf" nginx/conf.d/upstream.conf
if ! docker exec "$NGINX" nginx -t; then
  cp "nginx/upstream.$ACTIVE.conf" nginx/conf.d/upstream.conf
  $COMPOSE -f "docker-compose.$NEW.yml" down
  exit 1
fi

# 6. reload, stop the old color, record
docker exec "$NGINX" nginx -s reload
$COMPOSE -f "docker-compose.$ACTIVE.yml" down
echo "$NEW" > .active_env
