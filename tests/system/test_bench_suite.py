"""The benchmark suite, end to end on a tiny configuration, so that its code cannot rot.

No number is asserted (numbers belong in bench/): the test checks that every experiment
ran against every peer, printed one JSON document that the suite saved, left no process
behind, and that the report and its plots were written from those documents. It also
checks that docs/benchmarks.md is what bench/report.py makes of the committed results,
so the document always matches one run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


@pytest.fixture
def bench_modules() -> Iterator[None]:
    sys.path.insert(0, str(BENCH))
    try:
        yield
    finally:
        sys.path.remove(str(BENCH))


def failures_of(stderr: str) -> str:
    """What the failed experiments printed (the suite prints ``suite: NAME ...`` before each
    one, and ``suite: failed: A, B`` at the end): a later experiment's output (chaos logs
    the store faults it injects) must not hide an earlier one's traceback."""
    failed = next(
        (line.split(":", 2)[2].split(", ") for line in stderr.splitlines()
         if line.startswith("suite: failed:")), [],
    )  # fmt: skip
    parts = re.split(r"^(?=suite: \S+ )", stderr, flags=re.M)
    shown = [p for p in parts if p.split(" ", 2)[1:2] and p.split(" ", 2)[1] in
             {f.strip() for f in failed}]  # fmt: skip
    return "\n".join(p[-4000:] for p in shown) or stderr[-5000:]


@pytest.mark.system
@pytest.mark.timeout(1200)
def test_the_tiny_suite_runs_every_experiment_and_writes_the_report(
    tmp_path: Path, bench_modules: None
) -> None:
    import suite

    results, docs, images = tmp_path / "results", tmp_path / "benchmarks.md", tmp_path / "img"
    command = [sys.executable, str(BENCH / "suite.py"), "--tiny", "--results", str(results)]
    command += ["--docs", str(docs), "--images", str(images)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1100)
    assert done.returncode == 0, failures_of(done.stderr)

    index = json.loads((results / "suite.json").read_text())
    assert index["failed"] == []
    names = [e.name for e in suite.EXPERIMENTS]
    assert [e["name"] for e in index["experiments"]] == names
    documents = {name: json.loads((results / f"{name}.json").read_text()) for name in names}
    for name, doc in documents.items():
        assert doc["benchmark"] == name
        assert doc.get("leftover_processes", []) == [], name
    # Every peer took part: none was left out for want of an import or a start.
    for name in ("core", "serving", "scaling"):
        assert documents[name].get("left_out", {}) == {}, name
    assert documents["core"]["ray"] is not None
    assert "reason" not in documents["core"]["dask"]
    assert set(documents["serving"]["systems"]) == {"python", "stratus", "ray", "dask"}
    assert set(documents["scaling"]["systems"]) == {"stratus", "ray", "dask"}
    assert set(documents["social"]["levels"]) == {"eventual", "causal"}
    assert set(documents["fuse"]["results"]) == {"native", "passthrough", "stratus"}
    # Both keep-alive policies served every call of the same trace.
    trace = documents["trace"]
    assert trace["fixed_10_min"]["calls"] == trace["learned"]["calls"] == trace["trace"]["calls"]

    report = docs.read_text()
    assert "## Targets" in report
    assert "is not in this run" not in report
    assert "## The file system in functions" in report and "## The FUSE mount" in report
    assert "## Cold starts" in report and "## Keep-alive" in report
    assert "not measured by this suite yet" not in report  # elastic fills the cold-start row
    plots = ("calls_cdf", "composition_cdf", "serving_cdf", "social_cdf", "scaling", "elastic")
    for plot in plots:
        assert (images / f"{plot}.png").stat().st_size > 0
        assert f"](img/{plot}.png)" in report


def test_docs_benchmarks_md_is_the_report_of_the_committed_results(
    tmp_path: Path, bench_modules: None
) -> None:
    import report

    assert (BENCH / "results" / "suite.json").exists(), "no committed run in bench/results/"
    text = report.write_report(BENCH / "results", tmp_path / "benchmarks.md", tmp_path / "img")
    assert text == (ROOT / "docs" / "benchmarks.md").read_text(), (
        "docs/benchmarks.md is out of date: run `.venv/bin/python bench/report.py`"
    )


@pytest.mark.system
@pytest.mark.timeout(300)
def test_the_scaleout_benchmark_runs_on_one_host_or_says_why_not(tmp_path: Path) -> None:
    """The suite's smoke setting of ``bench/scaleout.py`` (stratus alone, one host, a few
    calls): every workload measured and the hot key's calls each applied once, or, without
    root, a document that says why it was skipped."""
    output = tmp_path / "scaleout.json"
    command = [sys.executable, str(BENCH / "scaleout.py"), "--tiny", "--no-ray", "--no-dask"]
    done = subprocess.run(
        [*command, "--output", str(output)], cwd=ROOT, capture_output=True, text=True, timeout=280
    )
    assert done.returncode == 0, done.stderr[-5000:]
    doc = json.loads(done.stdout)
    assert doc == json.loads(output.read_text())
    if doc.get("skipped"):
        assert "network namespaces" in doc["skipped"]
        return
    assert doc["leftover_processes"] == []
    stratus = doc["hosts"]["1"]["stratus"]
    assert set(stratus) == {"trivial", "rmw_eventual", "rmw_serializable", "rmw_hot",
                            "hot_key_check"}  # fmt: skip
    assert stratus["hot_key_check"]["applied"] == stratus["hot_key_check"]["calls"]
    assert {row["workload"] for row in doc["table"]} == set(stratus) - {"hot_key_check"}
    assert set(doc["left_out"]) == {"ray", "dask"}
