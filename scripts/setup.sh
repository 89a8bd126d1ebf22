#!/usr/bin/env bash
# Installs what the tests and the demo need, only when missing; a second run
# does nothing. MariaDB comes from Debian's packages, versitygw is built from
# the Go module proxy into a cache folder (BINVAULT_CACHE, default
# ~/.cache/binvault).
set -euo pipefail

VERSITYGW_VERSION=v1.8.0
CACHE=${BINVAULT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/binvault}

need_apt=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need_apt+=(mariadb-client)
command -v mariadb-binlog >/dev/null 2>&1 || need_apt+=(mariadb-client)
# The load-balancer test runs the real HAProxy.
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
if [ "${BINVAULT_SETUP_BENCH:-0}" = 1 ]; then
  command -v sysbench >/dev/null 2>&1 || need_apt+=(sysbench)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing ${need_apt[*]}; run as root or: sudo apt-get install -y ${need_apt[*]}" >&2
    exit 2
  fi
  echo "setup: installing ${need_apt[*]} from Debian (about a minute)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps the package from starting a system server on 3306.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

vgw="$CACHE/versitygw-$VERSITYGW_VERSION/versitygw"
if [ ! -x "$vgw" ]; then
  echo "setup: building versitygw $VERSITYGW_VERSION into $(dirname "$vgw") (about a minute, once)" >&2
  mkdir -p "$(dirname "$vgw")"
  GOBIN="$(dirname "$vgw")" GOFLAGS=-buildvcs=false go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
fi
