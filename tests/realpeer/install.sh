#!/usr/bin/env bash
# Installs the real-peer tier's peer: Node and npm (Debian packages, only when missing) and the
# pinned @ikenxuan/amagi with its dependencies (npm ci from package-lock.json) into
# tests/realpeer/node_modules. Run by `make test` through a stamp file; safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "node or npm is missing: installing the Debian packages nodejs and npm"
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    else
        echo "error: Node.js >= 18 and npm are needed for the real-peer tests, and installing" \
            "them needs root: run 'apt-get install nodejs npm' as root, then 'make test' again" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update
    # ca-certificates is only a Recommends of nodejs; npm may need the system CA store for HTTPS.
    "${as_root[@]}" apt-get install -y --no-install-recommends nodejs npm ca-certificates
fi

major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 18 ]; then
    echo "error: Node.js $(node --version) is too old for @ikenxuan/amagi; 18 or newer is needed" >&2
    exit 1
fi
echo "node $(node --version), npm $(npm --version)"

npm ci --no-audit --no-fund
