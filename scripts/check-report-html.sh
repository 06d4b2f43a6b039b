#!/usr/bin/env bash
# Renders an ordo report.html in headless Chromium and checks that every plot has data.
#   scripts/check-report-html.sh runs/orders/report.html [screenshot.png]
# Needs Debian's chromium (`apt-get install chromium`). Exit 0 when every plot rendered marks.
set -euo pipefail
html="$(realpath "$1")"
chrome="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
[ -n "$chrome" ] || { echo "chromium not found: apt-get install chromium (or set CHROMIUM)" >&2; exit 2; }
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
       --disable-component-update --disable-sync --user-data-dir="$profile")
dom="$("$chrome" "${flags[@]}" --virtual-time-budget=2000 --dump-dom "file://$html" 2>/dev/null)"
check="$(grep -o 'data-check="[^"]*"' <<<"$dom" | head -1)"
[ -n "$check" ] || { echo "$html: the page did not run its check (no data-check on body)" >&2; exit 1; }
plots="$(sed -E 's/.*plots=([0-9]+).*/\1/' <<<"$check")"
with="$(sed -E 's/.*with-data=([0-9]+).*/\1/' <<<"$check")"
if [ "${2:-}" != "" ]; then
  "$chrome" "${flags[@]}" --window-size=1400,2400 --screenshot="$(realpath -m "$2")" "file://$html" >/dev/null 2>&1
fi
echo "$html: $plots plots, $with with data"
[ "$plots" -gt 0 ] && [ "$plots" = "$with" ]
