#!/usr/bin/env bash
# Installs the Debian packages the tests use as real peers (swaks, curl, mbsync, fetchmail, msmtp, Dovecot and
# Postfix for comparison benchmarks and password hashes). Services they ship are not started:
# the tests run their own instances on loopback ports.
set -euo pipefail
PACKAGES=(swaks curl isync fetchmail msmtp dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd
          dovecot-sieve dovecot-managesieved postfix openssl)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}"
# Keep package scripts from starting the daemons they ship.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
