"""Scale: the audit from thousands to hundreds of thousands of images, local and Ray, and kNN.

Data (from ``--data``, default ``shared/data`` beside the repository), made by
augmentation so sizes are realistic: MNIST-derived digits (28 x 28 PNGs: the 10,000 digits,
then rotated and shifted copies) and photos derived from the 741 JPEGs of
``guns-smartphones/train`` (random crop, flip, brightness, longer side 320, JPEG 85-95).

Sections:

1. Engines identical: one small corpus (MNIST digits plus near and exact copies) ingested
   and audited with the local engine and with Ray Data (a local cluster of ``--workers``
   CPUs); hashes, properties (to 1e-9), duplicate sets and findings compared.
2. Audit at scale: for each size (full: 10,000, 25,000, 50,000, 100,000 digits; the
   copies beyond 10,000 made by seeded rotation and shift of the digits), ingest in one
   child process, audit in another (fresh workspace, no cache); wall time, time per image,
   CPU seconds (the audit process and its workers), time per image over the smallest
   size's (``x linear``; goal: at most 1.2 at 100,000), the neighbour search used and its
   recall@k against exact search, load average before and after, main-process peak RSS
   (VmHWM) and the sampled peak of the process tree's PSS (psutil; Ray's workers and
   raylet included).
   Local engine at every size; Ray at the sizes in ``ray_sizes``.
3. kNN: FAISS on synthetic clustered vectors (112-d, unit norm, like the audit's
   embeddings), on disk as float16: exact flat search where it is affordable, IVF
   (8-bit scalar quantiser) build and query time, and recall@10 of IVF against exact
   search on 1,000 sampled queries.
4. Offline augmentation (``augment run``, policy ``rotation-elastic``) of MNIST digits
   with the local engine and with Ray Data (Ray started before the clock): augmented
   images/s, and whether both wrote byte-identical files and identical catalog rows.

``--quick`` (under a minute or two): small sizes. ``--sections 2 --sizes 100000,1000000
--ray-sizes 0``: the audit alone at chosen sizes. The last line of stdout is one line of
JSON with ``engines_identical``, ``rss_ratio_large_vs_small``, ``faiss_recall_at_10`` and
``augment_identical``.
Ray (``pip install 'smartset[ray]'``) and psutil are optional: without them those columns
are empty.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _audit_corpus as corpus  # noqa: E402
from _data import DEFAULT_DATA, locate, peak_rss_kb  # noqa: E402

QUICK = {"mnist": (2_000, 8_000), "photos": (300,), "ray_sizes": (2_000,),
         "identical": 300, "knn": (20_000, 100_000), "flat_up_to": 20_000,
         "augment": (1_000, 3)}
FULL = {"mnist": (10_000, 25_000, 50_000, 100_000), "photos": (10_000,), "ray_sizes": (10_000,),
        "identical": 1_000, "knn": (100_000, 1_000_000), "flat_up_to": 100_000,
        "augment": (10_000, 5)}  # (digits, factor)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"folder holding guns-smartphones/ and mnist10k.npz (default {DEFAULT_DATA})")
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument("--sizes", type=lambda s: tuple(int(v) for v in s.split(",")),
                        help="MNIST-derived audit sizes, comma-separated (default: by mode)")
    parser.add_argument("--sections", type=lambda s: {int(v) for v in s.split(",")},
                        default={1, 2, 3, 4}, help="sections to run, e.g. 2 or 1,3 (default all)")
    parser.add_argument("--ray-sizes", type=lambda s: tuple(int(v) for v in s.split(",")),
                        help="audit sizes also run on Ray (default: by mode; 0: none)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes / Ray CPUs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=4, metavar=("STEP", "IMAGES", "WORKSPACE", "ENGINE"),
                        help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- data -----------------------------------------------------------------------------------

def write_photos(photos: Path, out: Path, total: int, *, seed: int = 0) -> int:
    """``total`` photos derived from ``photos``: crop, flip, brightness, resize, re-encode."""
    sources = sorted(p for p in photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rng = np.random.default_rng(seed)
    for index in range(total):
        source = sources[index % len(sources)]
        label = source.parent.name
        (out / label).mkdir(parents=True, exist_ok=True)
        with Image.open(source) as image:
            image = image.convert("RGB")
            image.draft("RGB", (640, 640))
            width, height = image.size
            share = float(rng.uniform(0.8, 1.0))
            w, h = max(8, int(width * share)), max(8, int(height * share))
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            image = image.crop((x, y, x + w, y + h))
            if rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            image = ImageEnhance.Brightness(image).enhance(float(rng.uniform(0.8, 1.2)))
            image.thumbnail((320, 320))
            image.save(out / label / f"{index:06d}.jpg", quality=int(rng.integers(85, 96)))
    return total


# -- child processes ------------------------------------------------------------------------

def child(step: str, images: str, workspace: str, engine: str) -> None:
    import smartset

    started, load_before = time.perf_counter(), os.getloadavg()[0]
    extra: dict = {}
    if step == "ingest":
        with smartset.init(workspace) as ws:
            ws.ingest(images, show_progress=False, engine=engine)
    elif step == "audit":
        from smartset.audit import audit

        with smartset.open(workspace) as ws:
            result = audit(ws, show_progress=False, report=False, engine=engine)
            extra = {"n": result.summary["n_audited"],
                     "neighbour_search": result.summary.get("neighbour_search")}
    elif step == "augment":  # ENGINE is the expansion factor here
        extra = augment_engines(Path(images), Path(workspace), int(engine))
    else:  # identical: local vs ray on one corpus
        extra = engines_identical(Path(images), Path(workspace))
    import resource

    seconds = time.perf_counter() - started
    cpu = sum(getattr(resource.getrusage(who), field) for who in
              (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for field in ("ru_utime", "ru_stime"))
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "self_kb": peak_rss_kb(),
                      "load": [round(load_before, 2), round(os.getloadavg()[0], 2)], **extra}))


def engines_identical(images: Path, scratch: Path) -> dict:
    import smartset
    from smartset.audit import audit

    states = {}
    for engine in ("local", "ray"):
        with smartset.init(scratch / f"ws-{engine}") as ws:
            ws.ingest(images, show_progress=False, engine=engine, batch_size=64)
            result = audit(ws, show_progress=False, report=False, engine=engine)
            relpath = ws.samples().set_index("id")["relpath"]
            states[engine] = {
                "samples": ws.samples().set_index("relpath").sort_index()[
                    ["sha256", "size", "width", "height", "mode", "split", "label"]],
                "props": result.properties.set_index("relpath").sort_index(),
                "groups": sorted((g["kind"], tuple(sorted(relpath[m] for m in g["members"])))
                                 for g in result.duplicate_groups),
                "findings": sorted((f.kind, relpath.get(f.sample_id, "") if f.sample_id else "",
                                    f.reason) for f in result.findings.itertuples())}
    a, b = states["local"], states["ray"]
    numeric = a["props"].select_dtypes("number").columns
    checks = {
        "hashes": bool(a["samples"].equals(b["samples"])),
        "properties": bool(np.allclose(a["props"][numeric].to_numpy(float),
                                       b["props"][numeric].to_numpy(float),
                                       rtol=1e-9, atol=1e-12, equal_nan=True)
                           and (a["props"]["pixel_hash"] == b["props"]["pixel_hash"]).all()),
        "duplicate_groups": a["groups"] == b["groups"],
        "findings": a["findings"] == b["findings"]}
    return {"checks": checks, "identical": all(checks.values()), "n": len(a["samples"]),
            "duplicate_groups": len(a["groups"])}


def augment_engines(images: Path, scratch: Path, factor: int) -> dict:
    """Offline augmentation of ``images`` with each engine: images/s, and whether the
    engines wrote the same bytes and the same catalog rows."""
    import smartset
    from smartset.augment import augment_version

    engines = ["local"] + (["ray"] if have_ray() else [])
    if "ray" in engines:  # its start-up is not augmentation time
        from smartset.engine import get_engine

        get_engine("ray")._start()
    rows, states = [], {}
    for engine in engines:
        with smartset.init(scratch / f"ws-{engine}") as ws:
            ws.ingest(images, show_progress=False, engine="local")
            done = augment_version(ws, policy="rotation-elastic", factor=factor, seed=0,
                                   name="grown", engine=engine, show_progress=False)
            rows.append({"engine": engine, "augmented": done["n_augmented"],
                         "seconds": done["seconds"], "img_per_s": done["images_per_s"]})
            frame = ws.samples("grown")
            derived = frame[frame["origin_id"].notna()].sort_values("relpath")
            lineage = ws.lineage().set_index("sample_id")["params"]
            states[engine] = (derived[["relpath", "sha256", "size", "label", "origin_id"]]
                              .reset_index(drop=True),
                              [json.dumps(lineage[sid], sort_keys=True) for sid in derived["id"]])
    identical = None
    if len(states) == 2:
        (a_rows, a_params), (b_rows, b_params) = states["local"], states["ray"]
        identical = bool(a_rows.equals(b_rows) and a_params == b_params)
    return {"rows": rows, "identical": identical, "n": rows[0]["augmented"]}


def run_child(step: str, images: Path, workspace: Path, engine: str) -> dict:
    """Run :func:`child` in a fresh interpreter; sample the PSS of its process tree."""
    command = [sys.executable, __file__, "--child", step, str(images), str(workspace), engine]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    tree_peak = None
    try:
        import psutil

        root, tree_peak = psutil.Process(process.pid), 0
        while process.poll() is None:
            total = 0
            try:
                for member in [root] + root.children(recursive=True):
                    try:
                        info = member.memory_full_info()
                        total += getattr(info, "pss", info.rss)
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            tree_peak = max(tree_peak, total)
            time.sleep(0.1)
    except ImportError:
        pass
    out, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"child {step} {images} ({engine}) failed with exit code {process.returncode}")
    report = json.loads(out.strip().splitlines()[-1])
    report["tree_peak_mb"] = None if tree_peak is None else tree_peak / 2**20
    return report


def have_ray() -> bool:
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        return False
    return True


# -- kNN ------------------------------------------------------------------------------------

def clustered_vectors(path: Path, n: int, *, dim: int = 112, clusters: int = 2000,
                      seed: int = 0):
    """``n`` unit vectors around ``clusters`` centres, written in blocks as float16."""
    from smartset.neighbours import VectorFile

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)

    def blocks():
        for start in range(0, n, 65536):
            m = min(65536, n - start)
            block = centres[rng.integers(0, clusters, m)] + 0.6 * rng.normal(size=(m, dim)).astype(np.float32)
            yield block / np.linalg.norm(block, axis=1, keepdims=True)

    return VectorFile.write(path, blocks(), dim, np.float16)


def knn_section(sizes, flat_up_to: int, scratch: Path) -> list[dict]:
    from smartset.neighbours import search_neighbours

    rows = []
    for n in sizes:
        vectors = clustered_vectors(scratch / f"vectors-{n}.f16", n)
        if n <= flat_up_to:
            started = time.perf_counter()
            search_neighbours(vectors, 10, method="flat")
            rows.append({"n": n, "index": "flat (exact)", "build_s": 0.0,
                         "query_s": time.perf_counter() - started, "recall_at_10": 1.0})
        found = search_neighbours(vectors, 10, method="ivf", recall_queries=1000,
                                  out=scratch / f"answer-{n}.bin")  # on disk, as the audit
        found.table.path.unlink()
        rows.append({"n": n, "index": f"ivf-sq8 nlist={found.params['nlist']} "
                                      f"nprobe={found.params['nprobe']}",
                     "build_s": found.params["build_s"], "query_s": found.params["query_s"],
                     "recall_at_10": found.recall})
        del found
        vectors.path.unlink()
    return rows


# -- main -----------------------------------------------------------------------------------

def fmt(value, spec=".1f", empty="-") -> str:
    return empty if value is None else format(value, spec)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        child(*args.child)
        return
    photos, npz = locate(args.data, "benchmarks/scale.py")
    plan = dict(QUICK if args.quick else FULL)
    if args.sizes:
        plan["mnist"] = args.sizes
    if args.ray_sizes:
        plan["ray_sizes"] = args.ray_sizes
    if args.sizes:
        plan["photos"] = ()  # the sizes asked for, MNIST-derived only
    ray_ok = have_ray()
    print(f"smartset scale benchmark: {os.cpu_count()} cores, {args.workers} workers; Ray "
          f"{'installed' if ray_ok else 'missing (pip install smartset[ray]): Ray rows empty'}"
          f"{'; quick' if args.quick else ''}.")
    result: dict = {"quick": args.quick, "cores": os.cpu_count(), "workers": args.workers}
    with tempfile.TemporaryDirectory(prefix="smartset-scale-") as tmp:
        scratch = Path(tmp)

        # 1. engines identical
        result["engines_identical"] = None
        if ray_ok and 1 in args.sections:
            corpus.build_mnist_corpus(npz, scratch / "identical", n=plan["identical"],
                                      n_near=20, seed=args.seed)
            report = run_child("identical", scratch / "identical", scratch / "identical-ws", "-")
            result["engines_identical"] = report["identical"]
            print(f"\nEngines identical (local vs Ray, {report['n']} images, "
                  f"{report['duplicate_groups']} duplicate sets): {report['checks']}")

        # 2. audit at scale, 3. kNN, 4. offline augmentation on the engines
        if 2 in args.sections:
            result |= audit_section(args, plan, ray_ok, photos, npz, scratch)
        if 3 in args.sections:
            result |= knn_report(plan, scratch)
        if 4 in args.sections:
            result |= augment_report(args, plan, npz, scratch)
    print()
    print(json.dumps(result))


def audit_section(args, plan, ray_ok, photos, npz, scratch) -> dict:
    """Section 2: ingest and audit of each size, local (and Ray at ``ray_sizes``)."""
    print("\nAudit of a fresh workspace (ingest apart, in its own child process). main MB "
          "= the audit process's peak RSS; tree MB = sampled peak PSS of it and its "
          "workers (Ray: raylet and workers too).")
    print("per image = audit wall / images; cpu = the audit process's and its workers' CPU "
          "seconds; x linear = (audit time / images) over the smallest size's (1.00 = linear; "
          "goal <= 1.2 at 100,000); load = 1-minute load average before -> after the audit.")
    print(f"{'data':>7} | {'images':>8} | {'engine':>6} | {'ingest s':>8} | {'audit s':>8} | "
          f"{'ms/img':>6} | {'cpu s':>7} | {'x linear':>8} | {'cpu x lin':>9} | "
          f"{'main MB':>7} | {'tree MB':>7} | {'load':>11} | kNN (recall@k)")
    runs = []
    datasets = [("mnist", n) for n in plan["mnist"]] + [("photos", n) for n in plan["photos"]]
    for kind, n in datasets:
        images = scratch / f"{kind}-{n}"
        if kind == "mnist":
            corpus.write_mnist_augmented(npz, images, n, seed=args.seed)
        else:
            write_photos(photos, images, n, seed=args.seed)
        engines = ["local"] + (["ray"] if ray_ok and n in plan["ray_sizes"] else [])
        for engine in engines:
            workspace = scratch / f"ws-{kind}-{n}-{engine}"
            ingest = run_child("ingest", images, workspace, engine)
            audited = run_child("audit", images, workspace, engine)
            search = audited.get("neighbour_search") or {}
            row = {"data": kind, "images": n, "engine": engine, "ingest_s": ingest["seconds"],
                   "audit_s": audited["seconds"], "img_per_s": n / audited["seconds"],
                   "ms_per_img": 1000 * audited["seconds"] / n, "cpu_s": audited["cpu_s"],
                   "main_mb": audited["self_kb"] / 1024, "tree_mb": audited["tree_peak_mb"],
                   "load": audited["load"], "knn": search.get("index", "flat"),
                   "knn_recall": search.get("recall_at_k")}
            first = next((r for r in runs if r["data"] == kind and r["engine"] == engine), row)
            row["x_linear"] = row["ms_per_img"] / first["ms_per_img"]
            row["cpu_x_linear"] = (row["cpu_s"] / n) / (first["cpu_s"] / first["images"])
            runs.append(row)
            knn = row["knn"] + (f" ({row['knn_recall']:.3f})" if row["knn_recall"] else "")
            print(f"{kind:>7} | {n:>8,} | {engine:>6} | {row['ingest_s']:>8.1f} | "
                  f"{row['audit_s']:>8.1f} | {row['ms_per_img']:>6.2f} | {row['cpu_s']:>7.1f} | "
                  f"{row['x_linear']:>8.2f} | {row['cpu_x_linear']:>9.2f} | "
                  f"{row['main_mb']:>7.0f} | {fmt(row['tree_mb'], '7.0f'):>7} | "
                  f"{row['load'][0]:>4.1f} -> {row['load'][1]:<4.1f} | {knn}", flush=True)
            shutil.rmtree(workspace, ignore_errors=True)
        shutil.rmtree(images, ignore_errors=True)
    local = [r for r in runs if r["data"] == "mnist" and r["engine"] == "local"]
    small, large = local[0], local[-1]
    result = {"audit": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()}
                        for r in runs],
              "rss_sizes": [small["images"], large["images"]],
              "rss_ratio_large_vs_small": round(large["main_mb"] / small["main_mb"], 3),
              "audit_x_linear": round(large["x_linear"], 3),
              "audit_cpu_x_linear": round(large["cpu_x_linear"], 3)}
    print(f"audit time per image, {large['images']:,} vs {small['images']:,} MNIST-derived "
          f"images: {large['x_linear']:.2f}x wall, {large['cpu_x_linear']:.2f}x CPU "
          f"(goal: within 1.2x of linear)")
    print(f"main-process peak RSS, {large['images']:,} vs {small['images']:,} MNIST-derived "
          f"images: {result['rss_ratio_large_vs_small']:.2f}x (goal: within 1.5x)")
    return result


def knn_report(plan, scratch) -> dict:
    """Section 3: FAISS build, query and recall."""
    print("\nkNN (k=10) over clustered 112-d unit vectors on disk (float16): build and "
          "query times; recall@10 of the approximate index against exact search on "
          "1,000 sampled queries.")
    knn = knn_section(plan["knn"], plan["flat_up_to"], scratch)
    print(f"{'vectors':>9} | {'index':<30} | {'build s':>7} | {'query s':>7} | recall@10")
    for row in knn:
        print(f"{row['n']:>9,} | {row['index']:<30} | {row['build_s']:>7.1f} | "
              f"{row['query_s']:>7.1f} | {row['recall_at_10']:.3f}")
    approx = [r for r in knn if r["index"].startswith("ivf")]
    return {"knn": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
                    for r in knn],
            "faiss_recall_at_10": round(min(r["recall_at_10"] for r in approx), 4)}


def augment_report(args, plan, npz, scratch) -> dict:
    """Section 4: offline augmentation, local and Ray."""
    digits, factor = plan["augment"]
    images = scratch / f"augment-{digits}"
    corpus.write_mnist_augmented(npz, images, digits, seed=args.seed)
    report = run_child("augment", images, scratch / "augment-ws", str(factor))
    print(f"\nOffline augmentation ('augment run', rotation-elastic, x{factor}) of "
          f"{digits:,} digits: {report['n']:,} augmented PNGs written and registered.")
    print(f"{'engine':>6} | {'seconds':>7} | {'img/s':>7}")
    for row in report["rows"]:
        print(f"{row['engine']:>6} | {row['seconds']:>7.1f} | {row['img_per_s']:>7.0f}")
    print(f"identical files and catalog rows (local vs Ray): {report['identical']}")
    return {"augment": report["rows"], "augment_identical": report["identical"]}


if __name__ == "__main__":
    main()
