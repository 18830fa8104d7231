#!/usr/bin/env bash
# Install what the browser tests need, idempotently:
#   - Debian's chromium (/usr/bin/chromium) through apt-get, if missing;
#   - playwright-core from npm into tests/browser/node_modules (per
#     tests/browser/package.json). playwright-core never downloads a browser,
#     and PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 makes sure nothing else does:
#     tests launch it with executablePath=/usr/bin/chromium.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PKG_DIR="$ROOT/tests/browser"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

say() { printf '[browser] %s\n' "$*"; }
die() { printf '[browser] ERROR: %s\n' "$*" >&2; exit 1; }
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
    else die "need root to run: $*"; fi
}
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
    say "installing Debian package(s): $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || say "apt-get update failed (going on)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || die "apt-get install $* failed"
}

t0=$(date +%s.%N)

# 1. chromium
if [ ! -x "$CHROMIUM" ]; then
    apt_install chromium
    [ -x "$CHROMIUM" ] || die "Debian's chromium installed but $CHROMIUM is missing"
fi
say "chromium: $("$CHROMIUM" --version 2>/dev/null | head -1)"

# 2. node + npm
if ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
fi
command -v node >/dev/null 2>&1 || die "node not found (install Debian's nodejs)"

# 3. playwright-core into tests/browser/node_modules (skipped when the pinned version is there)
[ -f "$PKG_DIR/package.json" ] || die "$PKG_DIR/package.json is missing"
want="$(node -p 'require(process.argv[1]).dependencies["playwright-core"]' "$PKG_DIR/package.json")"
have="$(node -p 'try { require(process.argv[1]).version } catch (e) { "" }' \
    "$PKG_DIR/node_modules/playwright-core/package.json" 2>/dev/null || true)"
if [ "$have" != "$want" ]; then
    say "npm: installing playwright-core@$want into tests/browser/node_modules"
    (cd "$PKG_DIR" && npm install --no-audit --no-fund --loglevel=error) \
        || die "npm install in tests/browser failed (playwright-core@$want)"
fi
have="$(node -p 'require(process.argv[1]).version' "$PKG_DIR/node_modules/playwright-core/package.json")"
say "playwright-core: $have in tests/browser/node_modules"

# 4. smoke test: playwright-core drives the system chromium headless
(cd "$PKG_DIR" && CHROMIUM="$CHROMIUM" node -e '
const { chromium } = require("playwright-core");
(async () => {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM, headless: true });
  const page = await browser.newPage();
  await page.setContent("<title>ok</title>");
  const title = await page.title();
  await browser.close();
  if (title !== "ok") throw new Error("unexpected page title " + title);
  console.log("[browser] smoke test: playwright-core launched " + process.env.CHROMIUM + " headless: ok");
})().catch((e) => { console.error("[browser] ERROR: smoke test failed: " + e.message); process.exit(1); });
') || die "playwright-core could not drive $CHROMIUM (see above)"

say "ready in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s"
