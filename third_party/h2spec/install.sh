#!/usr/bin/env bash
# Builds this copy of h2spec and installs it as $1 (default
# /usr/local/bin/h2spec). Offline: Go and h2spec's libraries come from
# Debian (.ci/run installs them with apt-get:
#   golang-go golang-github-fatih-color-dev golang-github-spf13-cobra-dev
#   golang-golang-x-net-dev), in GOPATH mode, nothing is downloaded.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-/usr/local/bin/h2spec}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pkg="$work/src/github.com/summerwind/h2spec"
mkdir -p "$pkg"
cp -R "$here"/. "$pkg"/
cd "$pkg"
GO111MODULE=off GOFLAGS= GOPROXY=off GOPATH="$work:/usr/share/gocode" GOCACHE="$work/cache" \
  go build -ldflags "-X main.VERSION=2.6.0+af83a65 -X main.COMMIT=af83a65" -o "$work/h2spec" ./cmd/h2spec
install -m 0755 "$work/h2spec" "$dest"
