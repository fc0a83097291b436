"""The benchmark suite: every experiment in one run, then the report and its plots.

``make bench`` runs ``.venv/bin/python bench/suite.py`` (the whole suite, under 20 minutes
on a quiet 2-core machine); ``make bench-quick`` runs ``--quick`` (a subset with short
settings, about a minute). Each experiment is a script ``bench/<name>.py`` run in its own
process with ``--quick`` / ``--tiny`` as asked; it prints one JSON document on stdout,
which the suite saves as ``<results>/<name>.json`` (``bench/results/`` by default; the
quick suite uses ``bench/results/quick/`` so that a full run's files stay as they were).
A failing experiment is recorded in ``suite.json`` and the others still run; the suite
exits non-zero. ``--only a,b`` reruns some experiments into a folder that holds an earlier
run of the same mode: their entries in ``suite.json`` replace the earlier ones, the rerun is
listed under ``reruns``, and the report covers the whole run. Then ``bench/report.py``
writes the report (``docs/benchmarks.md`` and ``docs/img/*.png`` for the full suite) from
the JSON files of this one run.

Adding an experiment is one line in ``EXPERIMENTS``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import report
from _stats import git_revision, loadavg, write_json

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


@dataclass(frozen=True)
class Experiment:
    """``bench/<name>.py`` and its arguments in each mode of the suite."""

    name: str
    quick: tuple[str, ...] | None = ("--quick",)  # None: not part of the quick suite
    tiny: tuple[str, ...] = ("--quick",)  # the smoke test's settings
    full: tuple[str, ...] = ()
    timeout_s: float = 900.0

    def args(self, mode: str) -> tuple[str, ...] | None:
        return {"full": self.full, "quick": self.quick, "tiny": self.tiny}[mode]


EXPERIMENTS = [
    Experiment("transport", quick=("--quick", "--rounds", "1"), tiny=("-n", "50", "--rounds", "1")),
    Experiment("core", tiny=("--tiny",)),
    Experiment("state", quick=None),
    Experiment("store", quick=None),
    Experiment("serving", tiny=("--tiny",)),
    Experiment("social", tiny=("--tiny",)),
    Experiment("scaling", tiny=("--tiny",)),
    # Not in the quick suite (minutes: three host counts, Ray's and Dask's starts); its
    # smoke test is stratus alone on one host, since the peers' starts outlast it. Needs
    # root (network namespaces); elsewhere its document says why it was skipped.
    Experiment("scaleout", quick=None, tiny=("--tiny", "--no-ray", "--no-dask"), timeout_s=2400.0),
    Experiment("fs", tiny=("--tiny",)),
    Experiment("fuse", tiny=("--tiny",)),
    Experiment("metering", tiny=("--tiny",)),
    Experiment("elastic", tiny=("--tiny",)),
    Experiment("gateway", quick=("--quick", "--no-ray"), tiny=("--tiny", "--no-ray")),
    # Not in the quick suite: the learned policy needs hours of trace to learn from.
    Experiment("trace", quick=None, tiny=("--tiny",)),
    # Not in the quick suite: a run per fault, each with a fresh cluster (minutes).
    Experiment("chaos", quick=None, tiny=("--tiny",)),
]


def run_experiment(
    experiment: Experiment, mode: str, results: Path, images: Path | None = None
) -> dict[str, Any]:
    """Run one experiment's script; save its document; return how it went. An experiment
    that draws its own plot draws it in ``images`` (see ``_stats.images_path``)."""
    args = experiment.args(mode)
    assert args is not None
    command = [sys.executable, str(BENCH / f"{experiment.name}.py"), *args]
    env = {**os.environ, "STRATUS_BENCH_RESULTS": str(results)}
    if images is not None:
        env["STRATUS_BENCH_IMAGES"] = str(images.resolve())
    print(f"suite: {experiment.name} {' '.join(args)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    outcome: dict[str, Any] = {"name": experiment.name, "args": list(args)}
    try:
        done = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
            timeout=experiment.timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        outcome["error"] = f"timed out after {experiment.timeout_s:g} s"
    else:
        outcome["returncode"] = done.returncode
        if done.returncode != 0:
            outcome["error"] = f"exited with {done.returncode} (its stderr is above)"
        else:
            try:
                document = json.loads(done.stdout)
            except ValueError as error:
                outcome["error"] = f"its stdout is not one JSON document: {error}"
            else:
                write_json(results / f"{experiment.name}.json", document)
    outcome["seconds"] = round(time.perf_counter() - start, 1)
    return outcome


def run_suite(
    mode: str,
    results: Path,
    only: Sequence[str] = (),
    docs: Path | None = None,
    images: Path | None = None,
) -> dict[str, Any]:
    """Run the experiments of ``mode`` (or those named in ``only``), write ``suite.json``
    and the report; the suite's own document."""
    chosen = [e for e in EXPERIMENTS if e.args(mode) is not None and (not only or e.name in only)]
    unknown = set(only) - {e.name for e in EXPERIMENTS}
    if unknown:
        raise SystemExit(f"suite: no experiment named {', '.join(sorted(unknown))}")
    results.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    suite: dict[str, Any] = {
        "benchmark": "suite",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "command": " ".join(["bench/suite.py", *sys.argv[1:]]),
        "git": git_revision(),
        "loadavg_start": loadavg(),
        "experiments": [run_experiment(e, mode, results, images) for e in chosen],
    }
    suite["loadavg_end"] = loadavg()
    suite["seconds"] = round(time.perf_counter() - start, 1)
    if only:
        suite = merged_with_earlier(results / "suite.json", suite)
    suite["failed"] = [e["name"] for e in suite["experiments"] if "error" in e]
    write_json(results / "suite.json", suite)
    if docs is not None and images is not None:
        report.write_report(results, docs, images)
        print(f"suite: wrote {docs} and the plots in {images}", file=sys.stderr)
    return suite


def merged_with_earlier(path: Path, rerun: dict[str, Any]) -> dict[str, Any]:
    """The earlier run's document at ``path`` (same mode) with the experiments of ``rerun``
    replaced; ``rerun`` itself when there is no such earlier run."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return rerun
    if earlier.get("mode") != rerun["mode"]:
        return rerun
    entries = {e["name"]: e for e in earlier.get("experiments", [])}
    entries |= {e["name"]: e for e in rerun["experiments"]}
    order = [e.name for e in EXPERIMENTS if e.name in entries]
    note = {k: rerun[k] for k in ("date", "command", "git", "seconds")}
    return {
        **earlier,
        "experiments": [entries[name] for name in order],
        "seconds": round(sum(entries[name]["seconds"] for name in order), 1),
        "reruns": [*earlier.get("reruns", []), note],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="the one-minute subset")
    group.add_argument("--tiny", action="store_true", help="a smoke test of every experiment")
    parser.add_argument("--only", default="", help="comma-separated experiment names")
    parser.add_argument("--results", type=Path, help="where the JSON goes")
    parser.add_argument("--docs", type=Path, help="the report (default: by mode)")
    parser.add_argument("--images", type=Path, help="the plots' folder (default: by mode)")
    args = parser.parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    default = BENCH / "results" / ("" if mode == "full" else mode)
    results = args.results or default
    docs = args.docs or (
        ROOT / "docs" / "benchmarks.md" if mode == "full" else results / "report.md"
    )
    images = args.images or (ROOT / "docs" / "img" if mode == "full" else results / "img")
    only = [name for name in args.only.split(",") if name]
    suite = run_suite(mode, results.resolve(), only, docs, images)
    for experiment in suite["experiments"]:
        status = experiment.get("error", "ok")
        print(f"suite: {experiment['name']:<10} {experiment['seconds']:>6} s  {status}")
    print(f"suite: {suite['seconds']} s in all; results in {results}")
    if suite["failed"]:
        raise SystemExit(f"suite: failed: {', '.join(suite['failed'])}")


if __name__ == "__main__":
    main()
