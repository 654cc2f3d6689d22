#!/usr/bin/env bash
# Installs what the tests need from Debian's packages when it is missing: PostgreSQL 15, MariaDB, Java and
# Maven for the Kafka broker, Chromium and its driver for the monitor page's browser test.
# The tests start their own instances on free ports; the system services are not used.
set -euo pipefail
need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15 postgresql-client-15)
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server mariadb-client)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || need+=(python3-venv)
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)  # the Kafka test broker
command -v mvn >/dev/null 2>&1 || need+=(maven)                       # fetches Kafka's jars
command -v chromium >/dev/null 2>&1 || need+=(chromium)                # the monitor page's browser test
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${need[*]} (run as root or: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # the packages' own services are not needed; keep them from starting
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
