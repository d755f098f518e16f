"""The photo audit's CPU, whole and by phase: what importing, measuring, the neighbour
phase and the report cost, self and worker processes together.

Each run is a fresh Python process (so imports and worker start-up count, as for a user):
it imports smartset, ingests the photos into a new workspace, and audits them, with
``features`` ``pixels`` and/or ``auto`` (the backbone on photos), with and without the HTML
report. CPU seconds are this process's and its finished children's
(``resource.RUSAGE_CHILDREN``: the local engine's measuring workers). With ``--phases`` the
audit runs on the serial engine and the CPU of its phases is taken in-process (measuring,
neighbours, report; imports timed apart).

Timings on a shared machine are inflated by the other jobs: the load average is printed
beside every row, and runs alternate between settings so that each sees the same noise;
the best of ``--repeat`` is kept, all are in the JSON. ``--quick``: the 80 shipped photos,
one run of each pixels setting.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import DEFAULT_DATA  # noqa: E402

_CHILD = r"""
import functools, json, os, resource, sys, time
def cpu():
    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime
start = cpu()
import smartset
from smartset.audit import audit
imported = cpu()
features, report, engine, phases, root, folder = sys.argv[1:7]
spent = {}
if phases == "1":
    import smartset.audit._run as run_module
    def timed(module, name):
        inner = getattr(module, name, None)
        if inner is None:
            return
        @functools.wraps(inner)
        def wrapper(*args, **kwargs):
            begin = time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.process_time() - begin
        setattr(module, name, wrapper)
    for name in ("compute_properties", "neighbour_findings"):
        timed(run_module, name)
    import smartset.audit.report as report_module
    timed(report_module, "write_report")
ws = smartset.init(folder)
before_ingest = cpu()
ws.ingest(root, show_progress=False, engine=None if engine == "local" else engine)
after_ingest = cpu()
load = os.getloadavg()[0]
wall = time.perf_counter()
result = audit(ws, features=features, report=report == "1", show_progress=False,
               engine=None if engine == "local" else engine)
wall = time.perf_counter() - wall
done = cpu()
print(json.dumps({
    "n": result.summary["n_audited"], "import_cpu_s": sum(imported) - sum(start),
    "ingest_cpu_s": sum(after_ingest) - sum(before_ingest),
    "audit_self_s": done[0] - after_ingest[0], "audit_children_s": done[1] - after_ingest[1],
    "audit_wall_s": wall, "load": [load, os.getloadavg()[0]],
    "phases": spent, "counts": result.counts()}))
"""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--features", default="pixels,auto",
                        help="comma-separated: pixels, auto (default: both)")
    parser.add_argument("--engine", default="local", choices=["local", "serial"])
    parser.add_argument("--repeat", type=int, default=3, help="runs per setting, best kept")
    parser.add_argument("--phases", action="store_true",
                        help="also the CPU of the phases (serial engine, in-process)")
    parser.add_argument("--quick", action="store_true",
                        help="the 80 shipped photos, one run per pixels setting")
    return parser.parse_args(argv)


def run_once(python: str, features: str, report: bool, engine: str, phases: bool,
             root: Path, scratch: Path) -> dict:
    folder = Path(tempfile.mkdtemp(dir=scratch, prefix="ws-")) / "ws"
    env = {**os.environ, "TQDM_DISABLE": "1"}
    done = subprocess.run(
        [python, "-c", _CHILD, features, "1" if report else "0",
         "serial" if phases else engine, "1" if phases else "0", str(root), str(folder)],
        capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        sys.exit(f"audit_costs: the child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    args = parse_args(argv)
    repo = Path(__file__).resolve().parents[1]
    if args.quick:
        root, features, repeat = repo / "examples" / "data" / "photos", ["pixels"], 1
    else:
        root = args.data / "guns-smartphones" / "train"
        features, repeat = args.features.split(","), args.repeat
    if not root.is_dir():
        sys.exit(f"audit_costs: no photos at {root}; pass --data DIR holding "
                 f"guns-smartphones/train/ (default: {DEFAULT_DATA}).")
    settings = [(f, report) for f in features for report in (False, True)]
    runs: dict[tuple[str, bool], list[dict]] = {s: [] for s in settings}
    with tempfile.TemporaryDirectory(prefix="audit-costs-") as scratch:
        for _ in range(repeat):  # alternated: every setting sees the same noise
            for features_, report in settings:
                runs[(features_, report)].append(
                    run_once(sys.executable, features_, report, args.engine, args.phases,
                             root, Path(scratch)))
    engine = "serial, in-process phases" if args.phases else args.engine
    print(f"The audit of {root} ({engine} engine): CPU seconds, self + worker processes; "
          f"best of {repeat}.")
    header = (f"{'features':9} {'report':6} {'import':>7} {'ingest':>7} {'audit':>7} "
              f"{'workers':>8} {'ms/img':>7} {'wall s':>7}  load")
    print(header + ("  phases (CPU s)" if args.phases else ""))
    print("-" * (len(header) + (30 if args.phases else 0)))
    rows = []
    for (features_, report), results in runs.items():
        best = min(results, key=lambda r: r["audit_self_s"] + r["audit_children_s"])
        total = best["audit_self_s"] + best["audit_children_s"]
        phases = " ".join(f"{k.replace('compute_properties', 'measuring')}={v:.2f}"
                          for k, v in best["phases"].items())
        print(f"{features_:9} {'yes' if report else 'no':6} {best['import_cpu_s']:7.2f} "
              f"{best['ingest_cpu_s']:7.2f} {total:7.2f} {best['audit_children_s']:8.2f} "
              f"{1000 * total / best['n']:7.2f} {best['audit_wall_s']:7.1f}  "
              f"{best['load'][0]:.1f}->{best['load'][1]:.1f}  {phases}")
        rows.append({"features": features_, "report": report, "n": best["n"],
                     "audit_cpu_s": round(total, 3), "cpu_ms_per_image": round(
                         1000 * total / best["n"], 2), "runs": results})
    print(json.dumps({"engine": engine, "root": str(root), "rows": rows}))


if __name__ == "__main__":
    main()
