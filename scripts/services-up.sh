#!/usr/bin/env bash
# Start PostgreSQL, Redis and RabbitMQ on this machine if they are not already answering.
# Used by `make run`, `make test` and .ci/run; a no-op where the services already run.
set -euo pipefail

wait_for() {  # name, check command
  for _ in $(seq 1 60); do
    if eval "$2" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "services-up: $1 did not come up" >&2
  return 1
}

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "services-up: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  wait_for PostgreSQL "pg_isready -h 127.0.0.1 -p 5432 -q"
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
  echo "services-up: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis "redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG"
fi

if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  echo "services-up: starting RabbitMQ"
  rabbitmq-server -detached
  wait_for RabbitMQ "rabbitmq-diagnostics -q check_port_connectivity"
fi
# The port can open before the broker accepts AMQP logins; wait until it really answers.
wait_for RabbitMQ "rabbitmq-diagnostics -q check_running"
