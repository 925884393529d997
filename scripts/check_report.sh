#!/usr/bin/env bash
# `cpt report` in a real browser: two tiny runs of one stream (replay, naive), one report of
# both, rendered by headless Chromium. Checks that the screenshot is not blank (many colours,
# enough ink) and that the DOM Chromium built holds the expected charts. Leaves report.html,
# screenshot.png and dom.html in OUT_DIR for a person to look at.
#   scripts/check_report.sh [OUT_DIR]     (default target/report-check)
# Installs Chromium with apt-get where it is missing (CI runs as root); where it cannot be
# installed, checks the page's charts without the browser and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/report-check}
rm -rf "$out"
mkdir -p "$out"
export CPT_LOG=warn

cargo build -q -p cpt-cli
cpt=target/debug/cpt
# Each command's output goes to a log, shown when it fails.
quietly() {
    "$@" >"$out/log.txt" 2>&1 || { cat "$out/log.txt" >&2; exit 1; }
}
quietly "$cpt" run examples/tiny.toml --out "$out/replay"
quietly "$cpt" run examples/tiny.toml --set 'strategies=["naive"]' --out "$out/naive"
quietly "$cpt" report "$out/replay" "$out/naive" --out "$out/report.html"

# Two runs sharing a stream of three experiences: one overlaid training chart, two heatmaps,
# one chart per set through training, the forgetting/transfer bars.
expected_svgs=7
count_svgs() { grep -o '<svg' "$1" | wc -l; }
found=$(count_svgs "$out/report.html")
[ "$found" -eq "$expected_svgs" ] || { echo "check report: $found <svg> in report.html, expected $expected_svgs" >&2; exit 1; }

browser=""
find_browser() {
    for name in chromium chromium-browser google-chrome; do
        if command -v "$name" >/dev/null 2>&1; then browser=$name; return 0; fi
    done
    return 1
}
if ! find_browser && command -v apt-get >/dev/null 2>&1; then
    { apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } >/dev/null 2>&1 || true
    find_browser || true
fi
if [ -z "$browser" ]; then
    echo "check report: skipped the browser (Chromium could not be installed); the page holds its $found charts"
    exit 0
fi

page="file://$(realpath "$out/report.html")"
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run)
"$browser" "${flags[@]}" --window-size=1100,3600 --screenshot="$(realpath "$out")/screenshot.png" "$page" >/dev/null 2>&1
"$browser" "${flags[@]}" --dump-dom "$page" 2>/dev/null >"$out/dom.html"

found=$(count_svgs "$out/dom.html")
[ "$found" -eq "$expected_svgs" ] || { echo "check report: the browser's DOM holds $found <svg>, expected $expected_svgs" >&2; exit 1; }

# Not blank: decode the PNG (zlib and the PNG filters, no imaging library needed) and count
# colours and the pixels that are neither the page's grey nor the cards' white.
python3 - "$out/screenshot.png" <<'EOF'
import struct, sys, zlib

def decode(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and colour in (2, 6), "unexpected PNG format"
        elif kind == b"IDAT":
            idat += body
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev, rows, i = bytearray(stride), [], 0
    for _ in range(height):
        kind, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        if kind == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev))
        elif kind in (1, 3, 4):
            for x in range(stride):
                a = line[x - bpp] if x >= bpp else 0
                b, c = prev[x], prev[x - bpp] if x >= bpp else 0
                if kind == 1:
                    line[x] = (line[x] + a) & 255
                elif kind == 3:
                    line[x] = (line[x] + (a + b) // 2) & 255
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows

width, height, bpp, rows = decode(sys.argv[1])
colours, ink = set(), 0
background = {(255, 255, 255), (244, 245, 247)}
for row in rows:
    for x in range(0, len(row), bpp):
        pixel = (row[x], row[x + 1], row[x + 2])
        colours.add(pixel)
        ink += pixel not in background
share = ink / (width * height)
print(f"check report: screenshot {width}x{height}, {len(colours)} colours, {share:.1%} ink")
if len(colours) < 64 or share < 0.03:
    sys.exit("check report: the screenshot looks blank")
EOF
echo "check report: $found charts rendered; see $out/screenshot.png"
