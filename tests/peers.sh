#!/usr/bin/env bash
# Installs the real SIP peers the integration tests drive, when missing
# (quick when all are there): SIPp, fail2ban and rtpengine (Debian; the
# media-anchoring tests run it in userspace, --table=-1), xmllint (Debian's
# libxml2-utils: pbx-features checks its dialog-info bodies against RFC
# 4235's schema), Debian's Chromium with playwright-core (npm, pinned by
# tests/browser/package-lock.json) for the JsSIP browser phone and the
# console, pjsua2-python (PyPI) for the pjsip phone, crates.io cargo-deb
# (pinned) for the Debian package test, and Debian's prometheus (promtool
# checks the alerting rules), tshark (opens the pcap, captures HEP),
# kamailio (its sipcapture module receives HEP), systemd
# (systemd-analyze verifies the unit) and PostgreSQL (the tests start
# throwaway clusters of their own: crates/pgcluster; no server is left
# running).
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
need_pkgs=()
command -v sipp >/dev/null 2>&1 || need_pkgs+=(sip-tester)
command -v fail2ban-regex >/dev/null 2>&1 || need_pkgs+=(fail2ban)
command -v rtpengine >/dev/null 2>&1 || need_pkgs+=(rtpengine-daemon)
command -v xmllint >/dev/null 2>&1 || need_pkgs+=(libxml2-utils)
[ -x /usr/bin/chromium ] || need_pkgs+=(chromium)
command -v promtool >/dev/null 2>&1 || need_pkgs+=(prometheus)
command -v tshark >/dev/null 2>&1 || need_pkgs+=(tshark)
command -v kamailio >/dev/null 2>&1 || need_pkgs+=(kamailio)
command -v systemd-analyze >/dev/null 2>&1 || need_pkgs+=(systemd)
command -v dpkg-deb >/dev/null 2>&1 || need_pkgs+=(dpkg)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "== installing ${need_pkgs[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
echo "== sipp: $(sipp -v 2>&1 | grep -o 'SIPp v[0-9.]*' | head -1)"
echo "== chromium: $(/usr/bin/chromium --version 2>/dev/null | head -1)"
echo "== rtpengine: $(rtpengine --version 2>&1 | head -1)"
echo "== xmllint: $(xmllint --version 2>&1 | head -1)"
echo "== postgresql: $(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)"

if ! (cd tests/browser && node -e "require.resolve('playwright-core')" 2>/dev/null \
    && [ "$(node -p "require('playwright-core/package.json').version")" = \
         "$(node -p "require('./package-lock.json').packages['node_modules/playwright-core'].version")" ]); then
    echo "== npm ci in tests/browser"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "== playwright-core: $(cd tests/browser && node -p "require('playwright-core/package.json').version")"

PJSUA2=2.15.1.post1
if [ "$(python3 -c 'import importlib.metadata as m; print(m.version("pjsua2-python"))' 2>/dev/null)" != "$PJSUA2" ]; then
    echo "== pip install pjsua2-python==$PJSUA2"
    python3 -m pip install --quiet --root-user-action=ignore "pjsua2-python==$PJSUA2"
fi
python3 -c 'import pjsua2' && echo "== pjsua2-python $PJSUA2 imports"

# cargo-deb builds the .deb in crates/forkswitch/tests/package.rs (about 2 min
# to install from source on a 2-core box; once per machine).
CARGO_DEB=3.6.0
if [ "$(cargo deb --version 2>/dev/null | awk '{print $2}')" != "$CARGO_DEB" ]; then
    echo "== cargo install cargo-deb $CARGO_DEB"
    cargo install --locked --quiet cargo-deb --version "$CARGO_DEB"
fi
echo "== cargo-deb $(cargo deb --version 2>/dev/null | awk '{print $2}'), promtool $(promtool --version 2>&1 | head -1 | awk '{print $3}'), $(tshark --version 2>/dev/null | head -1)"
