#!/bin/sh
# Regenerates the pcap files, manifest.toml and README.md in this directory: real clients
# (curl, openssl, Chromium, Firefox, aria2, Transmission) recorded in a network-namespace lab
# by tests/src/bin/make-captures.rs.
#
# Needs root: it creates network namespaces and runs tcpdump in them. It first installs
# what is missing (`cargo xtask setup --captures`: browsers, aria2, Transmission, ...). It takes about
# three minutes and removes its lab, processes and temporary files when it ends, also on
# failure or Ctrl-C. Arguments go to make-captures (`--help`).
# Then `cargo run -p classifier-tests --bin make-evasion-captures` remakes evasion/ from them.
set -eu
if [ "$(id -u)" -ne 0 ]; then
    echo "regenerate.sh needs root (network namespaces, tcpdump): sudo -E $0" >&2
    exit 1
fi
cd "$(dirname "$0")/../.."
cargo xtask setup --captures
exec cargo run --quiet --package classifier-tests --bin make-captures -- "$@"
