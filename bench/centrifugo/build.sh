#!/usr/bin/env bash
# Builds Centrifugo (the third system of bench/side_by_side.py) from the Go
# module proxy with the machine's Go, into bench/centrifugo/bin/centrifugo
# (git-ignored). Reuses a binary already built at the same version. Prints the
# binary's path on its last line. Bench only: CI and the tests never need it.
#
#   bash bench/centrifugo/build.sh            # v6.9.1
#   CENTRIFUGO_VERSION=v6.9.1 bash bench/centrifugo/build.sh
#
# Centrifugo v6.9.1's go.mod asks for Go 1.26 (the machine's go1.26.8 does).
# A later version that needs a newer Go: export GOTOOLCHAIN=go1.27.3 first
# (the go command then fetches that toolchain from the module proxy).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=${CENTRIFUGO_VERSION:-v6.9.1}
bin_dir=$here/bin
binary=$bin_dir/centrifugo
stamp=$bin_dir/centrifugo.version

if [ -x "$binary" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    echo "$binary"
    exit 0
fi
command -v go >/dev/null || { echo "build.sh: needs Go (go1.26+)" >&2; exit 1; }
mkdir -p "$bin_dir"
# A module-mode install of one tagged version (no download site; no VCS).
# Centrifugo sets its version string by -ldflags in its own release builds.
GOBIN=$bin_dir GOFLAGS=-buildvcs=false nice -n 15 go install -trimpath \
    -ldflags "-s -w -X github.com/centrifugal/centrifugo/v6/internal/build.Version=${version#v}" \
    "github.com/centrifugal/centrifugo/v6@$version"
echo "$version" >"$stamp"
echo "$binary"
