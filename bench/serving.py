"""Prediction serving: the Cloudburst paper's model pipeline, on stratus, Ray and Dask.

Run it with ``.venv/bin/python bench/serving.py`` (``--quick``, ``--tiny``). It prints one
JSON document on stdout and writes it to ``bench/results/serving.json``.

The pipeline: ``preprocess`` (scale an 8x8 digit image to [0, 1] and flatten it) ->
three small scikit-learn classifiers in parallel (logistic regression, Gaussian naive
Bayes, a decision tree of depth 8), each giving class probabilities -> ``average`` (the
mean of the three, its argmax is the predicted digit). The data set is ``load_digits``,
which ships with scikit-learn: the models are trained on 1,200 images before the run, and
the requests are the other 597, in turn. Every answer is checked against the same
pipeline run in this process.

Models are loaded once per warm worker, never per request:

- stratus: each model is a class registered with ``app.function(Model, init_args=(blob,))``
  (``blob`` is the pickled model), built once per executor; the DAG is
  ``preprocess >> [logistic, bayes, tree] >> average``; every step is kept warm on both
  executors (``min_instances=2``).
- Ray: one actor per model (built once), tasks for the two other steps; a request is
  ``average.remote(*(a.predict.remote(preprocess.remote(x)) for a in actors))``.
- Dask: the models are scattered to every worker once (``broadcast=True``); a request
  submits preprocess, the three predictions (each given its model's future) and average.
- python: the pipeline called in this process (the floor: no transport, no parallelism).

Latency of one request at a time (systems interleaved in rounds, samples pooled), and
throughput with many requests in flight (each system's batch issued at once, then
awaited). BLAS and OpenMP are held to one thread per process, as each system runs one
task per core.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.tree import DecisionTreeClassifier

import stratus
from _peers import DaskPeer, import_peer, start_ray
from _procs import wait_for_no_children, wait_for_pools
from _stats import (
    bench_main,
    latency_summary,
    loadavg,
    module_version,
    ratio,
    results_path,
    run_header,
)
from _timing import Block, latency_rounds, throughput_runs, throughput_summary, time_calls

RESULTS = results_path("serving")
RESULT_TIMEOUT = 120.0
MODELS = ("logistic", "bayes", "tree")


@dataclass(frozen=True)
class Settings:
    warmup: int = 30
    rounds: int = 6
    stratus_per_round: int = 200
    ray_per_round: int = 60
    dask_per_round: int = 40
    python_per_round: int = 300
    throughput_runs: int = 3
    batch: int = 300  # requests in flight in a throughput run (Ray and Dask: a third)
    settle_s: float = 0.2


QUICK = Settings(
    warmup=10,
    rounds=2,
    stratus_per_round=100,
    ray_per_round=20,
    dask_per_round=15,
    python_per_round=100,
    throughput_runs=1,
    batch=90,
)
TINY = replace(QUICK, warmup=2, rounds=1, stratus_per_round=5, ray_per_round=5)
TINY = replace(TINY, dask_per_round=5, python_per_round=5, batch=6, settle_s=0.0)


# The steps. They run on the executors and workers, shipped by value (cloudpickle).


def preprocess(ctx: Any, image: Any) -> Any:
    return (np.asarray(image, dtype=np.float64) / 16.0).reshape(1, -1)


def average(ctx: Any, *probabilities: Any) -> int:
    return int(np.argmax(np.mean(probabilities, axis=0)))


class Model:
    """A trained classifier, unpickled once per warm executor (or actor)."""

    def __init__(self, blob: bytes) -> None:
        self.model = pickle.loads(blob)

    def __call__(self, ctx: Any, features: Any) -> Any:
        return self.model.predict_proba(features)[0]

    def predict(self, features: Any) -> Any:  # Ray's actor method
        return self(None, features)


def plain_preprocess(image: Any) -> Any:
    return preprocess(None, image)


def plain_average(*probabilities: Any) -> int:
    return average(None, *probabilities)


def dask_predict(model: Any, features: Any) -> Any:
    return model.predict_proba(features)[0]


def train() -> tuple[dict[str, bytes], np.ndarray, np.ndarray]:
    """The three models, pickled; the test images and the pipeline's answer for each."""
    digits = load_digits()
    features, labels = digits.data / 16.0, digits.target
    train_x, train_y = features[:1200], labels[:1200]
    models = {
        "logistic": LogisticRegression(max_iter=500),
        "bayes": GaussianNB(),
        "tree": DecisionTreeClassifier(max_depth=8, random_state=0),
    }
    blobs = {name: pickle.dumps(model.fit(train_x, train_y)) for name, model in models.items()}
    images = digits.data[1200:]
    local = [Model(blobs[name]) for name in MODELS]
    answers = np.array(
        [average(None, *(m(None, preprocess(None, x)) for m in local)) for x in images]
    )
    return blobs, images, answers


# The systems.


class Pipeline:
    """One system: a request for image i, its timed block, and a throughput batch."""

    def __init__(self, images: np.ndarray, answers: np.ndarray) -> None:
        self.images, self.answers = images, answers

    def image(self, i: int) -> Any:
        return self.images[i % len(self.images)]

    def answer(self, i: int) -> int:
        return int(self.answers[i % len(self.answers)])

    def request(self, i: int) -> int:
        raise NotImplementedError

    def batch(self, n: int) -> list[int]:
        return [self.request(i) for i in range(n)]

    def checked_batch(self, n: int) -> list[int]:
        """``batch(n)`` with every answer checked; returns 1..n as ``throughput`` expects."""
        results = self.batch(n)
        wrong = sum(r != self.answer(i) for i, r in enumerate(results))
        if wrong:
            raise AssertionError(f"{wrong} of {n} predictions differ from the local pipeline")
        return list(range(1, n + 1))


class PythonPipeline(Pipeline):
    def __init__(self, blobs: dict[str, bytes], images: np.ndarray, answers: np.ndarray) -> None:
        super().__init__(images, answers)
        self.models = [Model(blobs[name]) for name in MODELS]

    def request(self, i: int) -> int:
        features = preprocess(None, self.image(i))
        return average(None, *(m(None, features) for m in self.models))


class StratusPipeline(Pipeline):
    def __init__(
        self, app: stratus.App, blobs: dict[str, bytes], images: np.ndarray, answers: np.ndarray
    ) -> None:
        super().__init__(images, answers)
        both = {"min_instances": 2}  # every step on both executors, as Ray and Dask use 2 CPUs
        first = app.function(preprocess, **both)
        models = [
            app.function(Model, name=name, init_args=(blobs[name],), **both) for name in MODELS
        ]
        last = app.function(average, **both)
        self.dag = app.dag("prediction", first >> models >> last)
        wait_for_pools(app, [fn.name for fn in (first, *models, last)], 2)

    def request(self, i: int) -> int:
        result: int = self.dag.remote(self.image(i)).result(timeout=RESULT_TIMEOUT)
        return result

    def batch(self, n: int) -> list[int]:
        futures = [self.dag.remote(self.image(i)) for i in range(n)]
        return [f.result(timeout=RESULT_TIMEOUT) for f in futures]


class RayPipeline(Pipeline):
    def __init__(
        self, ray: Any, blobs: dict[str, bytes], images: np.ndarray, answers: np.ndarray
    ) -> None:
        super().__init__(images, answers)
        self.ray = ray
        self.init_s = start_ray(ray)
        self.preprocess = ray.remote(plain_preprocess)
        self.average = ray.remote(plain_average)
        actor = ray.remote(num_cpus=0)(Model)  # three actors share the 2 CPUs with tasks
        self.actors = [actor.remote(blobs[name]) for name in MODELS]

    def submit(self, i: int) -> Any:
        features = self.preprocess.remote(self.image(i))
        return self.average.remote(*(a.predict.remote(features) for a in self.actors))

    def request(self, i: int) -> int:
        result: int = self.ray.get(self.submit(i), timeout=RESULT_TIMEOUT)
        return result

    def batch(self, n: int) -> list[int]:
        results: list[int] = self.ray.get([self.submit(i) for i in range(n)])
        return results


class DaskPipeline(Pipeline):
    def __init__(self, blobs: dict[str, bytes], images: np.ndarray, answers: np.ndarray) -> None:
        super().__init__(images, answers)
        self.peer = DaskPeer()
        models = [pickle.loads(blobs[name]) for name in MODELS]
        self.models = self.peer.client.scatter(models, broadcast=True)

    def submit(self, i: int) -> Any:
        features = self.peer.submit(plain_preprocess, self.image(i))
        probabilities = [self.peer.submit(dask_predict, m, features) for m in self.models]
        return self.peer.submit(plain_average, *probabilities)

    def request(self, i: int) -> int:
        result: int = self.submit(i).result(timeout=RESULT_TIMEOUT)
        return result

    def batch(self, n: int) -> list[int]:
        results: list[int] = self.peer.client.gather([self.submit(i) for i in range(n)])
        return results


def progress(message: str) -> None:
    print(f"serving.py: {message}", file=sys.stderr, flush=True)


def run(settings: Settings, mode: str, with_ray: bool, with_dask: bool) -> dict[str, Any]:
    clock_start = time.perf_counter_ns()
    doc = run_header(
        "serving",
        mode,
        scikit_learn=module_version("scikit-learn"),
        numpy=np.__version__,
        ray=module_version("ray"),
        dask=module_version("distributed"),
    )
    doc["settings"] = asdict(settings)
    blobs, images, answers = train()
    doc["data"] = {
        "dataset": "sklearn.datasets.load_digits",
        "train_images": 1200,
        "request_images": len(images),
        "models": {name: type(pickle.loads(blob)).__name__ for name, blob in blobs.items()},
        "model_bytes": {name: len(blob) for name, blob in blobs.items()},
    }
    per_round = {
        "python": settings.python_per_round,
        "stratus": settings.stratus_per_round,
        "ray": settings.ray_per_round,
        "dask": settings.dask_per_round,
    }
    systems: dict[str, Pipeline] = {"python": PythonPipeline(blobs, images, answers)}
    left_out: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stratus-serving-")))
        app = stratus.connect(data_dir=base / "stratus", executors=2)
        stack.callback(app.close)
        systems["stratus"] = StratusPipeline(app, blobs, images, answers)
        if with_dask:
            progress("starting Dask")
            systems["dask"] = DaskPipeline(blobs, images, answers)
            stack.callback(systems["dask"].peer.close)  # type: ignore[attr-defined]
        ray, reason, _ = import_peer("ray") if with_ray else (None, "skipped with --no-ray", 0)
        if ray is not None:
            progress("starting Ray")
            systems["ray"] = RayPipeline(ray, blobs, images, answers)
            stack.callback(ray.shutdown)
        elif reason:
            left_out["ray"] = reason
        for name, system in systems.items():
            progress(f"warming up {name}")
            time_calls(system.request, system.answer, settings.warmup)
        blocks: dict[str, list[Block]] = {
            name: [("request", s.request, s.answer, per_round[name])] for name, s in systems.items()
        }
        progress(f"{settings.rounds} interleaved rounds of {', '.join(systems)}")
        samples = latency_rounds(blocks, settings.rounds, settings.settle_s)
        # The peers do tens of requests a second: a third of the batch takes long enough.
        batch = {n: settings.batch // (3 if n in ("ray", "dask") else 1) for n in systems}
        progress("throughput")
        runs = throughput_runs(
            {name: s.checked_batch for name, s in systems.items()},
            batch,
            settings.throughput_runs,
            settings.settle_s,
        )
        init = {name: round(s.init_s, 3) for name, s in systems.items() if hasattr(s, "init_s")}
        if "dask" in systems:
            init["dask"] = round(systems["dask"].peer.init_s, 3)  # type: ignore[attr-defined]
    doc["leftover_processes"] = wait_for_no_children(timeout=15.0)
    doc["systems"] = {
        name: {
            "request": latency_summary(samples[f"{name}.request"], cdf=True),
            "throughput": throughput_summary(runs[name], batch[name]),
        }
        for name in systems
    }
    doc["init_s"] = init
    doc["left_out"] = left_out
    stratus_p50 = doc["systems"]["stratus"]["request"]["p50_us"]
    stratus_p99 = doc["systems"]["stratus"]["request"]["p99_us"]
    stratus_rate = doc["systems"]["stratus"]["throughput"]["calls_per_s"]
    doc["ratios_over_stratus"] = {
        "note": "system / stratus: latency above 1 and throughput below 1 mean stratus is faster",
        **{
            name: {
                "p50": ratio(s["request"]["p50_us"], stratus_p50),
                "p99": ratio(s["request"]["p99_us"], stratus_p99),
                "throughput": ratio(s["throughput"]["calls_per_s"], stratus_rate),
            }
            for name, s in doc["systems"].items()
            if name != "stratus"
        },
    }
    doc["load"]["loadavg_end"] = loadavg()
    doc["duration_s"] = round((time.perf_counter_ns() - clock_start) / 1e9, 1)
    return doc


def main(argv: Sequence[str] | None = None) -> None:
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")  # read by each executor and worker as it starts
    settings = {"full": Settings(), "quick": QUICK, "tiny": TINY}
    bench_main(__doc__, RESULTS, settings, run, peers=True, argv=argv)


if __name__ == "__main__":
    main()
