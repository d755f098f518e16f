#!/usr/bin/env bash
# The demo: ingest the shipped photos and digits, a first look at each, an audit, and an
# augmented version of the digits.
# Runs from the repository root with `smartset` on PATH (`make demo` arranges both).
set -euo pipefail
out=demo-workspace
rm -rf "$out"

echo "== Photos: 80 pistol and smartphone photos, class folders, messy names"
smartset init "$out/photos"
smartset ingest "$out/photos" examples/data/photos
smartset stats "$out/photos"
smartset audit "$out/photos"

echo
echo "== Digits: 1,000 MNIST digits from a NumPy archive (written out once as PNGs)"
smartset init "$out/digits"
smartset ingest "$out/digits" examples/data/digits.npz
echo "-- a second ingest reads nothing again:"
smartset ingest "$out/digits" examples/data/digits.npz
smartset version create original --description "the digits as shipped" -w "$out/digits"
smartset stats "$out/digits" --version original
smartset audit "$out/digits" --version original

echo
echo "== Augmentation: the MNIST study's rotation-elastic combination, x5, with lineage"
smartset augment run --policy rotation-elastic --factor 5 --version original --constraints digits -w "$out/digits"
smartset augment preview -w "$out/digits"

echo
echo "Demo output: $(cd "$out" && pwd)"
echo "  audit reports: $out/photos/reports/audit/live/report.html, $out/digits/reports/audit/original/report.html"
echo "  stats plots and montages: $out/*/reports/stats/"
echo "  augmentation preview: $out/digits/reports/augment/preview-named-policies.png"
