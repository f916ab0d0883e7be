#!/usr/bin/env bash
# Installs the system programs the tests use when they are missing: PostgreSQL's server
# binaries (the test fixture starts its own server where none is running) and openssl (the
# TLS tests make their certificates with it), Chromium and its driver (the report and dashboard
# tests open pages in a real headless browser) and tmux (the live view is tested in a real
# terminal). Needs root (or sudo) only when something is
# missing; prints what it does.
set -euo pipefail

need=()
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    need+=(postgresql)
fi
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
[ ${#need[@]} -eq 0 ] && exit 0

echo "installing system packages: ${need[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq "${need[@]}" >/dev/null
