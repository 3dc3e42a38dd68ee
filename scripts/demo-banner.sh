#!/bin/sh
# demo-banner.sh HOST:PORT [DATA_DIR] — printed by `make demo` just before
# the server starts: how to try the demo population with curl and the CLI.
# Every tag, attribute and city below exists in the demo (src/cli/demo*.c).
set -eu

listen="${1:-127.0.0.1:8080}"
data="${2:-demo-data}"

# A wildcard listen address is reached through loopback.
case "$listen" in
    0.0.0.0:*) addr="127.0.0.1:${listen#0.0.0.0:}" ;;
    "[::]:"*) addr="[::1]:${listen#\[::\]:}" ;;
    :*) addr="127.0.0.1$listen" ;;
    *) addr="$listen" ;;
esac
url="http://$addr"
here="$(cd "$(dirname "$0")/.." && pwd)"
# The binary `make` just built, as the user would type it from the repo root.
cp=crowdpack
case "${BUILD:-build}" in
    /*) [ -x "$BUILD/crowdpack" ] && cp="$BUILD/crowdpack" ;;
    *) [ -x "$here/${BUILD:-build}/crowdpack" ] && cp="${BUILD:-build}/crowdpack" ;;
esac
docs=""
for f in "$here"/README.md "$here"/docs/*.md; do
    [ -f "$f" ] && docs="$docs ${f#"$here"/}"
done

cat <<EOF

  ── crowdpack demo ─────────────────────────────────────────────────────
  The server starts below on $url, serving $data: users with
  age, gender, city/province/loc (317 cities), member tier and points,
  the 18/124/256/313 interest tree, lifecycle and device tags.

  Estimate an audience (人群预估) — counts answer while you type:

    curl -s $url/v1/crowds/estimate -H 'Content-Type: application/json' \\
      -d '{"expression": "tag:interest/parenting/baby_food/milk_powder AND gender = \"female\" AND age BETWEEN 25 AND 35"}'

    $cp count --server $url \\
      'tag:interest/finance/investment/funds AND city IN ("shanghai", "hangzhou") AND NOT member_tier = "none"'
    $cp count --server $url \\
      'near(23.1291, 113.2644, 15km) AND tag:interest/food/beverages AND age < 30'

  Create an audience pack (人群包) and export it:

    curl -s -X POST $url/v1/crowds -H 'Content-Type: application/json' \\
      -d '{"name": "gz_young_moms", "kind": "static", "expression": "city = \"guangzhou\" AND tag:interest/parenting AND age BETWEEN 25 AND 38"}'
    curl -s "$url/v1/crowds/gz_young_moms/export?format=csv" | head

    $cp crowd create --server $url car_intenders \\
      'tag:interest/transport/car_purchase/new_car/test_drive AND age BETWEEN 28 AND 45 AND points >= 2000'
    $cp crowd export --server $url car_intenders --format csv -o car_intenders.csv

  Browse the tag tree and the schema:

    curl -s "$url/v1/tags?root=interest/finance"
    $cp tags list --server $url interest/beauty
    $cp attrs list --server $url

  Docs:${docs:- docs/ in the source tree}; every command has --help ($cp count --help).
  Stop the server with Ctrl-C; the data stays in $data.
  ───────────────────────────────────────────────────────────────────────

EOF
