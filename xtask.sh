#!/usr/bin/env bash
# The project's entry point: `./xtask.sh demo`, `./xtask.sh test` (any
# `cargo xtask` task). rustup does not install the toolchain pinned in
# rust-toolchain.toml on first use where RUSTUP_AUTO_INSTALL=0, so this
# installs it first (a no-op taking milliseconds once it is there); the
# xtask then installs everything else it needs.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v rustup >/dev/null 2>&1; then
    echo "error: rustup is not on PATH; install rustup, then run ./xtask.sh again" >&2
    exit 1
fi
# With no argument, `rustup toolchain install` installs what rust-toolchain.toml names.
if ! out=$(rustup toolchain install 2>&1); then
    echo "error: installing the toolchain pinned in rust-toolchain.toml failed:" >&2
    echo "$out" >&2
    exit 1
fi
case "$out" in
    *"using existing install"*) ;;
    *) echo "installed the toolchain pinned in rust-toolchain.toml" ;;
esac
exec cargo xtask "$@"
