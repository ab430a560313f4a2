#!/bin/sh
# Installs a prebuilt archtrace binary from a release: no Rust toolchain, no 25-minute build.
#
#   curl -fsSL https://github.com/archtrace/archtrace/releases/latest/download/install.sh | sh
#   sh install.sh --version 0.2.0 --to /usr/local/bin
#
# It picks the archive for this machine (Linux x86_64/aarch64, macOS x86_64/arm64), checks it
# against the release's SHA-256 sum, and installs `archtrace` into --to (default ~/.local/bin).
# ARCHTRACE_RELEASES points it at another release host (a mirror, or a test's local server).
set -eu

releases="${ARCHTRACE_RELEASES:-https://github.com/archtrace/archtrace/releases}"
version="${ARCHTRACE_VERSION:-latest}"
to="${ARCHTRACE_INSTALL_DIR:-${HOME:-.}/.local/bin}"
print_target=false

fail() {
  echo "archtrace install: $*" >&2
  exit 1
}

usage() {
  cat <<'EOF'
Installs a prebuilt archtrace binary.

Usage: install.sh [--version X.Y.Z] [--to DIR] [--print-target]

  --version X.Y.Z   the release to install (default: the latest; or ARCHTRACE_VERSION)
  --to DIR          where to put the binary (default: ~/.local/bin; or ARCHTRACE_INSTALL_DIR)
  --print-target    print the build target this machine needs, and exit
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --version) [ $# -ge 2 ] || fail "--version needs a value, e.g. --version 0.2.0"; version="${2#v}"; shift 2 ;;
    --to) [ $# -ge 2 ] || fail "--to needs a folder"; to="$2"; shift 2 ;;
    --print-target) print_target=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; fail "unknown argument: $1" ;;
  esac
done

os="$(uname -s)"
arch="$(uname -m)"
case "$os/$arch" in
  Linux/x86_64|Linux/amd64) target="x86_64-unknown-linux-gnu" ;;
  Linux/aarch64|Linux/arm64) target="aarch64-unknown-linux-gnu" ;;
  Darwin/x86_64) target="x86_64-apple-darwin" ;;
  Darwin/arm64|Darwin/aarch64) target="aarch64-apple-darwin" ;;
  *) fail "no prebuilt binary for $os on $arch; build it from source: cargo install --locked --git https://github.com/archtrace/archtrace archtrace-cli" ;;
esac
if $print_target; then
  echo "$target"
  exit 0
fi

archive="archtrace-$target.tar.gz"
if [ "$version" = "latest" ]; then
  base="$releases/latest/download"
else
  base="$releases/download/v$version"
fi

if command -v curl >/dev/null 2>&1; then
  fetch() { curl --proto '=https,http' -fsSL --retry 3 -o "$2" "$1"; }
elif command -v wget >/dev/null 2>&1; then
  fetch() { wget -q -O "$2" "$1"; }
else
  fail "neither curl nor wget is installed; install one of them and run this again"
fi
if command -v sha256sum >/dev/null 2>&1; then
  sha256() { sha256sum "$1" | cut -d ' ' -f 1; }
elif command -v shasum >/dev/null 2>&1; then
  sha256() { shasum -a 256 "$1" | cut -d ' ' -f 1; }
else
  fail "neither sha256sum nor shasum is installed: the download cannot be checked"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT INT TERM

echo "downloading $base/$archive" >&2
fetch "$base/$archive" "$work/$archive" \
  || fail "could not download $base/$archive (is there a release $version for $target?)"
fetch "$base/$archive.sha256" "$work/$archive.sha256" \
  || fail "could not download the checksum $base/$archive.sha256"
expected="$(cut -d ' ' -f 1 < "$work/$archive.sha256")"
actual="$(sha256 "$work/$archive")"
if [ -z "$expected" ] || [ "$expected" != "$actual" ]; then
  fail "checksum mismatch for $archive: expected ${expected:-nothing}, got $actual; nothing was installed"
fi

tar -xzf "$work/$archive" -C "$work" || fail "$archive is not a gzipped tar archive"
binary="$work/archtrace-$target/archtrace"
[ -f "$binary" ] || fail "$archive holds no archtrace-$target/archtrace"
mkdir -p "$to" || fail "could not create $to"
# Copy, then rename: a running archtrace is never left with a half-written binary.
if ! { cp "$binary" "$to/.archtrace.new" && chmod 755 "$to/.archtrace.new" && mv -f "$to/.archtrace.new" "$to/archtrace"; }; then
  fail "could not write $to/archtrace (choose another folder with --to)"
fi

echo "installed $("$to/archtrace" --version) to $to/archtrace"
case ":${PATH:-}:" in
  *":$to:"*) ;;
  *) echo "note: $to is not on your PATH; add it, e.g. export PATH=\"$to:\$PATH\"" ;;
esac
echo "next: archtrace demo   (a simulated shop and the viewer on http://127.0.0.1:4320/)"
