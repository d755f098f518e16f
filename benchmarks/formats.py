"""Annotation formats: smartset importing and exporting a 50,000-box COCO file, against
pycocotools loading it; RLE and mAP agreement with pycocotools.

The data is synthetic (no download): ``--images`` images of 640x480 (one PNG, hard-linked
under every name) holding 50,000 boxes (``--boxes``) of three classes, a fifth of them with
a polygon outline. Rows:

- pycocotools ``COCO(file)``: ``json.load`` plus its index; the peer;
- smartset read + validate: the file parsed into an ``AnnotationSet`` and every box,
  polygon and category checked (no catalog);
- smartset import, annotations: ``import_annotations`` into a fresh workspace less its
  image ingest: parsing, validating against the real image sizes, and writing every
  annotation and its first event to the catalog (``coco_import_s``; the ratio to
  pycocotools is this over ``COCO(file)``);
- smartset import, total: the same with the image ingest (every image decoded once);
- smartset re-import: the same file again (nothing changed: no file read, no event);
- smartset annotations(): reading the 50,000 current annotations back as a DataFrame;
- exports: COCO, YOLO and Pascal VOC of the 50,000 boxes (images hard-linked), boxes/s.

Agreement: COCO RLE of 300 random masks and 300 random polygons, string for string
(``rle_identical``), and COCO box mAP@[.5:.95] of jittered predictions on the first
``--map-images`` images (500; 200 with ``--quick``) against ``COCOeval``
(``map_abs_diff``). Best of ``--repeat`` (3; 1 with ``--quick``). The last line of stdout
is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

import smartset
from smartset import detection as det


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="repeat 1, fewer mAP images")
    parser.add_argument("--boxes", type=int, default=50_000, help="boxes in the COCO file")
    parser.add_argument("--images", type=int, default=2_500, help="images they lie on")
    parser.add_argument("--map-images", type=int, default=None,
                        help="images in the mAP agreement check (default 500; 200 quick)")
    parser.add_argument("--repeat", type=int, default=None, help="best of (3; 1 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.map_images = args.map_images or (200 if args.quick else 500)
    return args


def write_coco(folder: Path, n_boxes: int, n_images: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    first = folder / "images" / "im_00000.png"
    Image.new("RGB", (640, 480), (90, 90, 90)).save(first)
    images = []
    for i in range(n_images):
        name = f"im_{i:05d}.png"
        if i:
            os.link(first, folder / "images" / name)
        images.append({"id": i + 1, "file_name": name, "width": 640, "height": 480})
    image_of = np.sort(rng.integers(1, n_images + 1, n_boxes))
    w = rng.uniform(4, 200, n_boxes)
    h = rng.uniform(4, 200, n_boxes)
    x = rng.uniform(0, 640 - w)
    y = rng.uniform(0, 480 - h)
    polygon = rng.random(n_boxes) < 0.2
    annotations = []
    for k in range(n_boxes):
        ann = {"id": k + 1, "image_id": int(image_of[k]), "category_id": int(rng.integers(1, 4)),
               "bbox": [round(float(v), 2) for v in (x[k], y[k], w[k], h[k])],
               "area": round(float(w[k] * h[k]), 2), "iscrowd": 0, "segmentation": []}
        if polygon[k]:
            x0, y0, x1, y1 = x[k], y[k], x[k] + w[k], y[k] + h[k]
            ann["segmentation"] = [[round(float(v), 2) for v in
                                    (x0, y0, x1, y0, x1, y1, (x0 + x1) / 2, (y0 + y1) / 2, x0, y1)]]
        annotations.append(ann)
    path = folder / "instances_train.json"
    path.write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": c, "name": n, "supercategory": "thing"}
                       for c, n in ((1, "knife"), (2, "whale"), (3, "boat"))]}))
    return path


def best_of(repeat: int, run) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        value = run()
        times.append(time.perf_counter() - started)
    return min(times), value


def rle_agreement(seed: int) -> dict:
    from pycocotools import mask as reference

    rng = np.random.default_rng(seed)
    same = total = 0
    ours_s = theirs_s = 0.0
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 200, 2))
        mask = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        t0 = time.perf_counter()
        mine = det.rle.encode(mask)["counts"]
        t1 = time.perf_counter()
        theirs = reference.encode(np.asfortranarray(mask))["counts"].decode()
        ours_s, theirs_s = ours_s + t1 - t0, theirs_s + time.perf_counter() - t1
        same += mine == theirs
        total += 1
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(5, 300, 2))
        k = int(rng.integers(3, 12))
        polygon = list(rng.uniform(-5, max(h, w) + 5, 2 * k).round(2))
        t0 = time.perf_counter()
        mine = det.rle.polygons_to_rle([polygon], h, w)["counts"]
        t1 = time.perf_counter()
        theirs = reference.merge(reference.frPyObjects([polygon], h, w))["counts"].decode()
        ours_s, theirs_s = ours_s + t1 - t0, theirs_s + time.perf_counter() - t1
        same += mine == theirs
        total += 1
    return {"rle_identical": same, "rle_cases": total, "rle_ours_s": round(ours_s, 4),
            "rle_pycocotools_s": round(theirs_s, 4)}


def map_agreement(coco_path: Path, n_images: int, seed: int) -> dict:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    data = json.loads(coco_path.read_text())
    keep = {im["id"] for im in data["images"][:n_images]}
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    rng = np.random.default_rng(seed)
    results = []
    for a in data["annotations"]:
        if rng.random() < 0.85:
            x, y, w, h = a["bbox"]
            j = rng.normal(0, 0.08, 4) * [w, h, w, h]
            cat = a["category_id"] if rng.random() < 0.9 else int(rng.integers(1, 4))
            results.append({"image_id": a["image_id"], "category_id": cat,
                            "bbox": [x + j[0], y + j[1], max(1.0, w + j[2]), max(1.0, h + j[3])],
                            "score": round(float(rng.random()), 3)})
    for image in keep:
        for _ in range(int(rng.integers(0, 3))):
            results.append({"image_id": image, "category_id": int(rng.integers(1, 4)),
                            "bbox": [*rng.uniform(0, 400, 2).tolist(), *rng.uniform(5, 150, 2).tolist()],
                            "score": round(float(rng.random()), 3)})
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(data, handle)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            started = time.perf_counter()
            coco = COCO(handle.name)
            evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            theirs_s = time.perf_counter() - started
    finally:
        os.unlink(handle.name)
    gt = pd.DataFrame([(a["image_id"], a["category_id"], *a["bbox"], a["area"], a["iscrowd"])
                       for a in data["annotations"]],
                      columns=["image", "category", "x", "y", "w", "h", "area", "iscrowd"])
    pred = pd.DataFrame([(r["image_id"], r["category_id"], *r["bbox"], r["score"]) for r in results],
                        columns=["image", "category", "x", "y", "w", "h", "score"])
    started = time.perf_counter()
    ours = det.coco_map(gt, pred)
    ours_s = time.perf_counter() - started
    return {"map_images": len(keep), "map_gt": len(gt), "map_predictions": len(pred),
            "map_ours": round(ours["map"], 6), "map_pycocotools": round(evaluator.stats[0], 6),
            "map_abs_diff": float(abs(ours["map"] - evaluator.stats[0])),
            "map50_abs_diff": float(abs(ours["map50"] - evaluator.stats[1])),
            "map_ours_s": round(ours_s, 3), "map_pycocotools_s": round(theirs_s, 3)}


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        from pycocotools.coco import COCO
    except ImportError:
        COCO = None
    print(f"smartset {smartset.__version__} annotation formats benchmark: {os.cpu_count()} "
          f"cores, {args.boxes:,} boxes on {args.images:,} images, best of {args.repeat}"
          f"{', quick' if args.quick else ''}.")
    rows, result = [], {"cores": os.cpu_count(), "quick": args.quick, "boxes": args.boxes,
                        "images": args.images, "repeat": args.repeat}
    with tempfile.TemporaryDirectory(prefix="smartset-formats-") as tmp:
        scratch = Path(tmp)
        started = time.perf_counter()
        coco_path = write_coco(scratch / "data", args.boxes, args.images, args.seed)
        size_mb = coco_path.stat().st_size / 2 ** 20
        print(f"Wrote the COCO file ({size_mb:.1f} MB) and images in "
              f"{time.perf_counter() - started:.1f} s (untimed).\n")
        n = args.boxes
        if COCO is not None:
            def load():
                with contextlib.redirect_stdout(io.StringIO()):
                    return COCO(str(coco_path))
            peer, _ = best_of(args.repeat, load)
            rows.append(("pycocotools COCO(file): json + index", peer, n))
        else:
            peer = None

        def parse():
            aset = det.read_coco(coco_path)
            det.check_paths(aset)
            det.validate(aset)
            assert len(aset.annotations) == n and not aset.issues, aset.issues[:3]
            return aset
        parse_s, _ = best_of(args.repeat, parse)
        rows.append(("smartset read + validate (no catalog)", parse_s, n))

        imports, totals, reimports, reads = [], [], [], []
        for attempt in range(args.repeat):
            ws = smartset.init(scratch / f"ws{attempt}")
            report = det.import_annotations(ws, coco_path, show_progress=False)
            assert report.new == n and not report.issues, report.issues
            totals.append(report.seconds["total"])
            imports.append(report.seconds["total"] - report.seconds["ingest"])
            started = time.perf_counter()
            again = det.import_annotations(ws, coco_path, show_progress=False)
            reimports.append(time.perf_counter() - started)
            assert again.unchanged == n and again.ingest["files_read"] == 0
            read_s, frame = best_of(1, lambda: det.annotations(ws))
            reads.append(read_s)
            assert len(frame) == n
            if attempt < args.repeat - 1:
                ws.close()
        rows += [("smartset import, annotations (parse, validate, catalog)", min(imports), n),
                 ("smartset import, total (image ingest included)", min(totals), n),
                 ("smartset re-import, nothing changed", min(reimports), n),
                 ("smartset annotations() -> DataFrame", min(reads), n)]
        exports = {}
        for fmt in ("coco", "yolo", "voc"):
            seconds, summary = best_of(args.repeat, lambda: det.export(
                ws, None, scratch / f"out-{fmt}", format=fmt, images="link"))
            assert summary["annotations"] == n, summary
            exports[fmt] = seconds
            rows.append((f"smartset export {fmt} (images hard-linked)", seconds, n))
        back = det.read_coco(scratch / "out-coco" / "annotations.json")
        result["export_round_trip_boxes"] = len(back.annotations)
        ws.close()
        agreement = {}
        if COCO is not None:
            agreement = rle_agreement(args.seed)
            agreement |= map_agreement(coco_path, args.map_images, args.seed)
    width = max(len(r[0]) for r in rows)
    header = f"{'step':<{width}} | {'seconds':>8} | {'boxes/s':>10} | {'x pycocotools':>13}"
    print(header)
    print("-" * len(header))
    for name, seconds, count in rows:
        ratio = f"{seconds / peer:>13.2f}" if peer else f"{'-':>13}"
        print(f"{name:<{width}} | {seconds:>8.3f} | {count / seconds:>10,.0f} | {ratio}")
    result |= {"pycocotools_load_s": None if peer is None else round(peer, 4),
               "coco_parse_validate_s": round(parse_s, 4),
               "coco_import_s": round(min(imports), 4),
               "ratio_vs_pycocotools": None if peer is None else round(min(imports) / peer, 3),
               "coco_import_total_s": round(min(totals), 4),
               "coco_reimport_s": round(min(reimports), 4),
               "annotations_read_s": round(min(reads), 4),
               **{f"export_{fmt}_s": round(s, 4) for fmt, s in exports.items()},
               **{f"export_{fmt}_boxes_per_s": round(n / s) for fmt, s in exports.items()}}
    if agreement:
        a = agreement
        print("\nAgreement with pycocotools:")
        print(f"  RLE: {a['rle_identical']}/{a['rle_cases']} masks and polygons encode to the "
              f"identical string (ours {a['rle_ours_s']:.3f} s, pycocotools "
              f"{a['rle_pycocotools_s']:.3f} s)")
        print(f"  box mAP@[.5:.95] on {a['map_images']} images ({a['map_gt']:,} objects, "
              f"{a['map_predictions']:,} predictions): ours {a['map_ours']:.6f}, COCOeval "
              f"{a['map_pycocotools']:.6f}, |difference| {a['map_abs_diff']:.1e} "
              f"(ours {a['map_ours_s']:.2f} s, COCOeval {a['map_pycocotools_s']:.2f} s)")
        result |= agreement
    else:
        print("\npycocotools is not installed: no peer row, no agreement check.")
    print()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
