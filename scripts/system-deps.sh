#!/usr/bin/env bash
# Debian packages the harness uses: an OpenSSH server for the simulated farm
# and the SSH tests, the Fashion-MNIST data set, and qemu-user-static for the
# emulated Arm devices, headless Chromium for the tests that open the HTML report
# as a reader would, and PostgreSQL for the shared history store's tests.
# Installs only what is missing.
set -euo pipefail
need=()
command -v /usr/sbin/sshd >/dev/null 2>&1 || need+=(openssh-server)
test -d /usr/share/datasets/fashion-mnist || need+=(dataset-fashion-mnist)
# qemu-user-static: the emulated aarch64 farm devices (sim-pi4-arm64, sim-jetson-arm64) and their tests
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
# chromium: tests/test_report_browser.py opens reports/<run>/index.html in it (headless, DevTools pipe)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# postgresql-15: the shared PostgreSQL history store's tests start a real server (initdb + pg_ctl)
test -x /usr/lib/postgresql/15/bin/pg_ctl || need+=(postgresql-15)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: the tests need the Debian package(s) ${need[*]}; install them, then run make again:" >&2
  echo "  sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "${need[@]}" >/dev/null; }
