#!/usr/bin/env bash
# Makes sure RabbitMQ (5672) and PostgreSQL (5432) answer on loopback. If one does not and
# Docker is there, starts both from deploy/compose.yaml; otherwise says what is missing and how
# to get it, and fails.
set -euo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  local port=$1 name=$2
  for _ in $(seq 1 60); do answers "$port" && return 0; sleep 1; done
  echo "error: $name did not come up on 127.0.0.1:$port" >&2; return 1
}

rabbit=ok; pg=ok
answers 5672 || rabbit=missing
answers 5432 || pg=missing
[ "$rabbit" = ok ] && [ "$pg" = ok ] && exit 0

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  echo "starting RabbitMQ and PostgreSQL with docker compose (deploy/compose.yaml)"
  docker compose -f deploy/compose.yaml up -d
  wait_for 5672 RabbitMQ
  wait_for 5432 PostgreSQL
  exit 0
fi

echo "The pipeline needs RabbitMQ on 127.0.0.1:5672 and PostgreSQL on 127.0.0.1:5432." >&2
[ "$rabbit" = missing ] && cat >&2 <<'TXT'
  - RabbitMQ is not answering. Start it with:  rabbitmq-server -detached && rabbitmqctl await_startup
    (install: apt-get install rabbitmq-server; the management plugin helps:
     rabbitmq-plugins enable rabbitmq_management)
TXT
[ "$pg" = missing ] && cat >&2 <<'TXT'
  - PostgreSQL is not answering. Start it with:
      pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start
    (install: apt-get install postgresql; the services expect user postgres with trust auth
     on 127.0.0.1, or set LAPOR__DATABASE__URL)
TXT
echo "  - or install Docker and rerun: deploy/compose.yaml starts both." >&2
exit 1
