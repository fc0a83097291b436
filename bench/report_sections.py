"""The report's sections, one per experiment: a table of (system, p50, p99, throughput,
ratio) from the experiment's JSON, a few lines on how it was measured, and its plot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import plots
from report_format import (
    cell_ms,
    cell_us,
    markdown_table,
    megabytes,
    over,
    pick,
    rate,
    seconds,
    times,
)

Results = dict[str, dict[str, Any]]
COLUMNS = ["system", "p50", "p99", "throughput", "ratio"]


def _missing(name: str) -> list[str]:
    return ["", f"`bench/{name}.py` is not in this run."]


def _rows(
    doc: dict[str, Any] | None, spec: list[tuple[str, str, str | None]], base: str
) -> tuple[list[list[str]], dict[str, Any]]:
    """Table rows for (label, path to a latency summary, path to a throughput); the ratio
    is over the summary at ``base``. Also the CDF of each row that has one, by label."""
    rows, cdfs = [], {}
    base_p50 = pick({"d": doc or {}}, "d", f"{base}.p50_us")
    for label, path, throughput in spec:
        summary = pick({"d": doc or {}}, "d", path)
        if not isinstance(summary, dict):
            continue
        per_s = pick({"d": doc or {}}, "d", throughput) if throughput else None
        rows.append(
            [
                label,
                cell_us(summary.get("p50_us")),
                cell_us(summary.get("p99_us")),
                rate(per_s),
                over(summary.get("p50_us"), base_p50),
            ]
        )
        if summary.get("cdf_us"):
            cdfs[label] = summary["cdf_us"]
    return rows, cdfs


def _latency_section(
    heading: str,
    prose: str,
    doc: dict[str, Any] | None,
    spec: list[tuple[str, str, str | None]],
    base: str,
    plot: tuple[Path, Path, str, str] | None = None,
) -> list[str]:
    """A heading, a paragraph, the table of ``_rows`` and, with ``plot`` = (images, link,
    file name, title), the CDF plot of its rows."""
    rows, cdfs = _rows(doc, spec, base)
    lines = ["", heading, "", prose, "", *markdown_table(COLUMNS, rows)]
    return lines + (_plot(*plot, cdfs) if plot else [])


def _plot(images: Path, link: Path, name: str, title: str, cdfs: dict[str, Any]) -> list[str]:
    if not cdfs:
        return []
    plain = {label.replace("**", "").replace("`", ""): points for label, points in cdfs.items()}
    plots.latency_cdf(images / f"{name}.png", title, plain)
    return ["", f"![{title}]({(link / f'{name}.png').as_posix()})"]


def calls(r: Results, images: Path, link: Path) -> list[str]:
    if r.get("core") is None:
        return _missing("core")
    return _latency_section(
        "## Calls of a trivial function (`bench/core.py`)",
        "`incr(x) = x + 1` called synchronously, one call at a time; throughput is async"
        " (N calls issued, then all awaited). The floors: a plain call in the client, and a"
        " signed request/reply (msgspec + HMAC-SHA256 + pickle, stratus's frames) to a forked"
        " server over a Unix socketpair, both sides spinning briefly as stratus does. Ray runs"
        " with `ray.init(num_cpus=2)`, Dask on a `LocalCluster` of 2 worker processes with one"
        " thread each, stratus embedded with 2 executors; the Lambda-style worker is a process"
        " that answers over a `multiprocessing` Pipe (its state, when it has any, in Redis):"
        " the floor of a FaaS function, with no signing, scheduling or transactions around"
        " it.\n\nWhere the time of a stratus call goes: one frame each way over an abstract Unix"
        " socket (the signed request/reply floor), plus Python on both sides (pickling,"
        " framing and HMAC, the invocation's state machine, completing the future). Client"
        " and executors busy-poll for up to 200 µs after recent activity before they sleep,"
        " because waking a process on the other core costs 50-90 µs; when other work keeps"
        " both cores busy the spin cannot help, and latencies move toward the blocking"
        " figures (see the transport table).",
        r["core"],
        [
            ("plain Python call (floor)", "python_call", None),
            ("signed request/reply, Unix socket (floor)", "socket.request_reply", None),
            (
                "**stratus** `incr.remote(x).result()`",
                "stratus.sync_call",
                "stratus.throughput.calls_per_s",
            ),
            (
                "stratus, alone on the machine",
                "stratus.solo.sync_call",
                "stratus.solo.throughput.calls_per_s",
            ),
            ("Ray task `ray.get(incr.remote(x))`", "ray.task_call", "ray.throughput.calls_per_s"),
            ("Ray actor method", "ray.actor_call", None),
            (
                "Dask `client.submit(incr, x).result()`",
                "dask.submit",
                "dask.throughput.calls_per_s",
            ),
            ("Lambda-style worker process (over a Pipe)", "lambda.call", None),
        ],
        "stratus.sync_call",
        (images, link, "calls_cdf", "Latency of a trivial call"),
    )


def composition(r: Results, images: Path, link: Path) -> list[str]:
    if r.get("core") is None:
        return _missing("core")
    return _latency_section(
        "## Function composition `square(incr(x))` (`bench/core.py`)",
        "The Cloudburst paper's first experiment. In stratus the result of `incr` goes"
        " executor to executor and only `square` answers the client; the Lambda-style"
        " composition calls the first function, which stores its result in Redis, then the"
        " second, which reads it (as functions on a FaaS without direct messaging compose).",
        r["core"],
        [
            ("**stratus** DAG `incr >> square`", "stratus.dag", None),
            ("stratus, alone on the machine", "stratus.solo.dag", None),
            ("Ray `square.remote(incr.remote(x))`", "ray.chain", None),
            ("Dask `submit(square, submit(incr, x))`", "dask.chain", None),
            ("Lambda-style: two calls, the result passed through Redis", "lambda.chain", None),
        ],
        "stratus.dag",
        (images, link, "composition_cdf", "Latency of square(incr(x))"),
    )


def put_get(r: Results, images: Path, link: Path) -> list[str]:
    if r.get("core") is None:
        return []
    return _latency_section(
        "### Client-side put and get of 100 bytes (`bench/core.py`)",
        "From the client process, off the function hot path: stratus's `app.kv` goes"
        " through the coordinator to the store (SQLite); Ray's object store; Redis direct.",
        r["core"],
        [
            ("**stratus** `app.kv.put` then `app.kv.get`", "stratus.put_get", None),
            ("Ray `ray.get(ray.put(v))`", "ray.put_get", None),
            ("Redis SET then GET (redis-py)", "lambda.redis_put_get", None),
        ],
        "stratus.put_get",
    )


def memory(r: Results, images: Path, link: Path) -> list[str]:
    core = r.get("core")
    if core is None:
        return []
    rows = []
    for label, section, start in (
        ("stratus (embedded)", "stratus", "connect.median_s"),
        ("Ray", "ray", "init_s"),
        ("Dask LocalCluster", "dask", "init_s"),
    ):
        rss = pick(r, "core", f"{section}.idle_rss")
        if not isinstance(rss, dict):
            continue
        rows.append(
            [
                label,
                megabytes(rss.get("total_rss_mb")),
                megabytes(rss.get("total_pss_mb")),
                str(len(rss.get("processes", []))),
                seconds(pick(r, "core", f"{section}.{start}")),
            ]
        )
    return [
        "",
        "### Idle memory and start-up (`bench/core.py`)",
        "",
        "RSS and PSS (shared pages split between their users) of every process of each"
        " system, idle, at the same moment; start-up is `stratus.connect()` to a ready"
        " cluster (median), `ray.init()`, and `LocalCluster()` with its `Client`. Dask's"
        " scheduler runs as threads of the client process, so its memory is not counted;"
        " stratus's coordinator is.",
        "",
        *markdown_table(["system", "RSS", "PSS", "processes", "start-up"], rows),
    ]


def locality(r: Results, images: Path, link: Path) -> list[str]:
    loc = pick(r, "state", "locality")
    if not isinstance(loc, dict):
        return ["", "## Data locality", *_missing("state")]
    rows = []
    for label, key in (
        ("**stratus**, `Ref`s cached by the executor (warm)", "warm"),
        ("stratus, `Ref`s re-put before each call (cold cache)", "cold"),
        ("Lambda-style: the arrays fetched from Redis in the function", "redis"),
    ):
        s = loc.get(key) or {}
        base = loc.get("warm", {}).get("median_ms")
        rows.append(
            [
                label,
                cell_ms(s.get("median_ms")),
                cell_ms(s.get("p99_ms")),
                "-",
                over(s.get("median_ms"), base),
            ]
        )
    return [
        "",
        "## Data locality (`bench/state.py`)",
        "",
        f"A function sums {loc.get('arrays')} arrays of {loc.get('array_mb')} MB"
        " (float64) passed by reference (`stratus.Ref`); the client routes the call to the"
        " executor that caches them. The ratio is over the warm case.",
        "",
        *markdown_table(COLUMNS, rows),
    ]


def state_access(r: Results, images: Path, link: Path) -> list[str]:
    rw = pick(r, "state", "rw_call")
    if not isinstance(rw, dict):
        return ["", "## State access", *_missing("state")]
    anomalies = rw.get("anomalies") or {}
    rows = []
    for label, key in (
        ("stratus, a function with no state (floor)", "nostate"),
        ("**stratus** read-modify-write, `eventual`", "eventual"),
        ("stratus, `serializable`", "serializable"),
        ("stratus, `causal`", "causal"),
        ("Lambda-style worker: GET, +1, SET in Redis", "redis_rw"),
        ("the same worker answering without Redis (floor)", "redis_noop"),
    ):
        s = rw.get(key) or {}
        rows.append(
            [
                label,
                cell_us(s.get("p50_us")),
                cell_us(s.get("p99_us")),
                "-",
                over(s.get("p50_us"), (rw.get("eventual") or {}).get("p50_us")),
                str(anomalies.get(key, "-")),
            ]
        )
    hit = pick(r, "state", "kv_get.hit")
    miss = pick(r, "state", "kv_get.miss")
    floor = pick(r, "state", "kv_get.dict_floor")
    stale = pick(r, "state", "staleness") or {}
    return [
        "",
        "## State access: read-modify-write of one key (`bench/state.py`)",
        "",
        "`rw(key)`: get a counter, put it + 1, return the old value; called from the client"
        " one at a time. Every result is checked against the count of earlier calls; a"
        " mismatch (stale read or lost update) is an anomaly. The ratio is over `eventual`."
        " Where the time goes: the call's round trip (the no-state row), then the commit, a"
        " SQLite write transaction under the writers' lock (two pages into the WAL, ~25-40"
        " µs in one process, more in an executor woken by the call), and the metering of the"
        " attempt (~7 µs). The read is a cache hit: a committed merge stays cached when the"
        " store reports it merged into the version the cache holds.",
        "",
        *markdown_table([*COLUMNS, "anomalies"], rows),
        "",
        f"`ctx.kv.get` inside a function, timed there: cache hit p50 {cell_us(_p(hit, 'p50_us'))}"
        f" / p99 {cell_us(_p(hit, 'p99_us'))} (a dict lookup: {cell_us(_p(floor, 'p50_us'))});"
        f" cache miss (a store read) p50 {cell_us(_p(miss, 'p50_us'))} / p99"
        f" {cell_us(_p(miss, 'p99_us'))}. Staleness under `eventual` (a put until every"
        f" executor serves it): p50 {cell_ms(stale.get('p50_ms'))}, max"
        f" {cell_ms(stale.get('max_ms'))} over {stale.get('trials', 0)} trials.",
    ]


def _p(summary: Any, key: str) -> Any:
    return summary.get(key) if isinstance(summary, dict) else None


def serving(r: Results, images: Path, link: Path) -> list[str]:
    doc = r.get("serving")
    if doc is None:
        return ["", "## Prediction serving", *_missing("serving")]
    labels = {
        "python": "the pipeline in the client process (floor)",
        "stratus": "**stratus** DAG `preprocess >> [3 models] >> average`",
        "ray": "Ray: tasks and 3 model actors",
        "dask": "Dask: tasks, models scattered to the workers",
    }
    data = doc.get("data", {})
    return _latency_section(
        "## Prediction serving (`bench/serving.py`)",
        "Preprocess an 8x8 digit, run three scikit-learn classifiers in parallel"
        f" ({', '.join(data.get('models', {}).values())}), average their class"
        f" probabilities; trained on `load_digits` ({data.get('train_images')} images), requests"
        f" cycle through the other {data.get('request_images')}, and every answer is checked"
        " against the same pipeline run locally. Models are loaded once per warm worker:"
        " stratus registers each as a class (`init_args=(pickled model,)`), built once per"
        " executor; Ray builds one actor per model; Dask scatters them to every worker."
        " Throughput: a batch of requests in flight at once.",
        doc,
        [
            (labels.get(n, n), f"systems.{n}.request", f"systems.{n}.throughput.calls_per_s")
            for n in doc.get("systems", {})
        ],
        "systems.stratus.request",
        (images, link, "serving_cdf", "Latency of one prediction request"),
    )


def social(r: Results, images: Path, link: Path) -> list[str]:
    doc = r.get("social")
    if doc is None:
        return ["", "## Social network", *_missing("social")]
    rows, cdfs = [], {}
    levels = doc.get("levels", {})
    base = pick(r, "social", "levels.eventual.latency.timeline.p50_us")
    for level, d in levels.items():
        counts, timeline = d.get("counts", {}), d.get("latency", {}).get("timeline", {})
        rows.append(
            [
                f"stratus, `{level}`",
                cell_us(timeline.get("p50_us")),
                cell_us(timeline.get("p99_us")),
                rate(d.get("calls_per_s")),
                over(timeline.get("p50_us"), base),
                str(counts.get("reply_without_its_post", 0)),
                str(counts.get("feed_entry_without_its_post", 0)),
                str(counts.get("replies_refused", 0)),
                str(counts.get("posts_shown", 0)),
            ]
        )
        if timeline.get("cdf_us"):
            cdfs[f"timeline, {level}"] = timeline["cdf_us"]
    return [
        "",
        "## Social network under `eventual` and `causal` (`bench/social.py`)",
        "",
        f"{doc.get('clients', 'clients')}; each story: two readers look for a post about"
        " to be written, its author posts it (post and feed in one transaction), the next user"
        " replies (after reading it) and a follower reads their timeline (the last 5 posts of"
        " each feed they follow, and the parent of each reply); every fifth story adds a"
        " follow. p50/p99 are of `timeline`; throughput counts every call. A *reply without its"
        " post* is the anomaly causal consistency rules out; a *feed entry without its post*"
        " is a read that sees one of a transaction's writes but not the other: `causal` rules"
        " it out too (the writes of one invocation depend on one another, and a write depends"
        " on everything its writer's reads depend on), `eventual` does not (executor caches"
        " refresh key by key).",
        "",
        *markdown_table(
            [
                *COLUMNS,
                "reply without its post",
                "feed entry without its post",
                "replies refused (parent unseen)",
                "posts shown",
            ],
            rows,
        ),
        *_plot(images, link, "social_cdf", "Latency of a timeline read", cdfs),
    ]


def scaling(r: Results, images: Path, link: Path) -> list[str]:
    doc = r.get("scaling")
    if doc is None:
        return ["", "## Scaling", *_missing("scaling")]
    systems: dict[str, list[dict[str, Any]]] = doc.get("systems", {})
    names = list(systems)
    by_clients: dict[int, dict[str, dict[str, Any]]] = {}
    for name, levels in systems.items():
        for row in levels:
            by_clients.setdefault(row["clients"], {})[name] = row
    rows = [
        [str(clients), *(_scale_cell(level.get(name)) for name in names)]
        for clients, level in sorted(by_clients.items())
    ]
    lines = [
        "",
        "## Scaling with concurrent clients (`bench/scaling.py`)",
        "",
        f"Clients are {doc.get('clients_are', 'threads')}: each calls a trivial function"
        f" and waits, for {pick(r, 'scaling', 'settings.seconds_per_level')} s per level and"
        " system; the systems take turns at each level. Cells: calls per second (p50, p99).",
        "",
        *markdown_table(["clients", *names], rows),
    ]
    if systems:
        plots.versus_clients(images / "scaling.png", "Throughput and latency vs clients", systems)
        lines += ["", f"![Throughput and latency vs clients]({(link / 'scaling.png').as_posix()})"]
    return lines


def _scale_cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    return f"{rate(row['calls_per_s'])} ({cell_us(row['p50_us'])}, {cell_us(row['p99_us'])})"


def scaleout(r: Results, images: Path, link: Path) -> list[str]:
    doc = r.get("scaleout")
    heading = "## Scale-out over hosts (`bench/scaleout.py`)"
    if doc is None:
        return ["", heading, *_missing("scaleout")]
    if doc.get("skipped"):
        return ["", heading, "", f"Not measured in this run: {doc['skipped']}."]
    by_hosts: dict[str, dict[str, Any]] = doc.get("hosts", {})
    systems = list(next(iter(by_hosts.values()), {}))
    workloads = list(dict.fromkeys(row["workload"] for row in doc.get("table", [])))
    rows = [
        [f"`{workload}`", n, *(_scaleout_cell(by_hosts[n][s].get(workload)) for s in systems)]
        for workload in workloads
        for n in by_hosts
    ]
    settings = doc.get("settings", {})
    left_out = "; ".join(f"{name}: {why}" for name, why in doc.get("left_out", {}).items())
    load = " / ".join(
        str((doc["load"].get(k) or ["?"])[0]) for k in ("loadavg_start", "loadavg_end")
    )
    return [
        "",
        heading,
        "",
        "The same workloads on 1, 2 and 3 hosts, each host a network namespace of this one"
        " machine (so the hosts share its cores: this shows what spreading costs, not a"
        " speedup). stratus: a coordinator host, a Redis host and N hosts with a node agent"
        " of one executor; Dask: a scheduler and N one-thread workers on the same hosts; Ray:"
        " a CPU-less head and N one-CPU nodes; the client on the bridge. `rmw_*` reads a key"
        f" and writes it back plus one (keys spread over {settings.get('keys')}; `rmw_hot`:"
        " one key, serializable; Ray and Dask use a Redis client in the task, `WATCH`/`MULTI`"
        " for serializable). Cells: p50 / p99 of synchronous calls, and calls per second"
        f" with {settings.get('async_calls')} in flight (median of {settings.get('rounds')}"
        " rounds; calls that failed with `ConflictError` after 10 re-runs, in all rounds, do"
        " not count). Run as root: `.venv/bin/python bench/scaleout.py`; see"
        f" `docs/scaling.md`. Load average (1 min) at its start / end: {load}."
        + (f" Left out: {left_out}." if left_out else ""),
        "",
        *markdown_table(["workload", "hosts", *systems], rows),
    ]


def _scaleout_cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    sync, failed = row["sync"], row.get("conflict_errors")
    cell = f"{cell_us(sync['p50_us'])} / {cell_us(sync['p99_us'])}, {rate(row['calls_per_s'])}"
    return cell + (f" ({failed} `ConflictError`)" if failed else "")


def store(r: Results, images: Path, link: Path) -> list[str]:
    table = pick(r, "store", "table_p50_p99_us")
    if not isinstance(table, dict):
        return ["", "## Store backends", *_missing("store")]
    ops = ["get_hot", "put_100B", "merge_100B", "commit_2r2w"]
    rows = [
        [
            f"`{name}`",
            *(f"{cell_us(v[op][0])} / {cell_us(v[op][1])}" if op in v else "-" for op in ops),
            rate(v.get("two_process_merges_per_s")),
        ]
        for name, v in table.items()
    ]
    fsync = pick(r, "store", "fdatasync_4KiB.p50_us")
    return [
        "",
        "## Store backends (`bench/store.py`)",
        "",
        "Each backend's operations in one process, p50 / p99 (`memory` is the floor: the"
        " shared logic with no engine under it); the last column is two processes merging"
        f" into one key. `fdatasync` of 4 KiB on this disk: p50 {cell_us(fsync)}. See"
        " `docs/store.md` for the backends.",
        "",
        *markdown_table(
            ["backend", "get", "put 100 B", "merge 100 B", "commit 2r+2w", "2-process merges"], rows
        ),
    ]


def transport(r: Results, images: Path, link: Path) -> list[str]:
    variants = pick(r, "transport", "variants")
    if not isinstance(variants, dict):
        return ["", "## Transport", *_missing("transport")]
    labels = {
        "socket_poll": "Unix socket, both sides block in `poll`",
        "socket_spin": "Unix socket, 200 µs spin before `poll` (stratus)",
        "zmq_dealer_router": "pyzmq DEALER/ROUTER over ipc",
        "zmq_req_rep": "pyzmq REQ/REP over ipc",
    }
    base = (variants.get("socket_spin") or {}).get("p50_us")
    rows = [
        [
            labels.get(name, name),
            cell_us(s["p50_us"]),
            cell_us(s["p99_us"]),
            "-",
            over(s["p50_us"], base),
        ]
        for name, s in variants.items()
        if s
    ]
    return [
        "",
        "## Transport: one signed request/reply (`bench/transport.py`)",
        "",
        "A stratus `Call` and its `Result` (msgspec body, HMAC-SHA256, pickled arguments)"
        " between two processes; why stratus uses plain Unix sockets with a brief spin and"
        " not pyzmq. The ratio is over the spinning socket. The spin pays only while the"
        " other core is free: on a machine loaded by other processes (see the load average"
        " above) it costs more than it saves.",
        "",
        *markdown_table(COLUMNS, rows),
    ]


def gateway(r: Results, images: Path, link: Path) -> list[str]:
    doc = r.get("gateway")
    if doc is None:
        return ["", "## HTTP gateway", *_missing("gateway")]
    spec = [
        ("stratus, Python client", "variants.python_client", None),
        ("**stratus, HTTP gateway**", "variants.gateway", None),
        ("FastAPI app calling Python in-process", "variants.fastapi_direct", None),
        ("Ray Serve deployment", "variants.ray_serve", None),
    ]
    added = pick(r, "gateway", "gateway_added_p50_us")
    prose = (
        "A trivial call over HTTP (`POST /v1/functions/noop:invoke`, one kept-alive"
        " connection) to the gateway of a server from `stratus up`, next to the same call"
        " from the Python client, a FastAPI app that answers in-process (the floor of any"
        " HTTP service on uvicorn), and Ray Serve. The ratio is over the Python client."
        f" The gateway adds {cell_us(added)} at p50 (target: at most 300 µs)."
    )
    return _latency_section(
        "## HTTP gateway (`bench/gateway.py`)", prose, doc, spec, "variants.python_client"
    )


def table_of(doc: dict[str, Any]) -> list[str]:
    """The Markdown table of a document's ``table`` (rows of ``system``, ``p50_us``,
    ``p99_us``, ``per_s``, ``ratio``); no lines when it has none."""
    table = doc.get("table")
    if not isinstance(table, list):
        return []
    rows = [
        [
            str(row.get("system", "?")),
            cell_us(row.get("p50_us")),
            cell_us(row.get("p99_us")),
            rate(row.get("per_s")),
            times(row.get("ratio")),
        ]
        for row in table
    ]
    return markdown_table(COLUMNS, rows)


def fs(r: Results, images: Path, link: Path) -> list[str]:
    doc = r.get("fs")
    if doc is None:
        return ["", "## The file system in functions", *_missing("fs")]
    small = doc.get("small_file", {})
    return [
        "",
        "## The file system in functions: `ctx.fs` (`bench/fs.py`)",
        "",
        "An embedded cluster with one executor, its store in SQLite (WAL,"
        " `synchronous=NORMAL`); the peer is the same code on the machine's file system"
        " (`open()` in a temporary directory) in the same function, interleaved with it."
        " Call rows are timed by the client (`fn.remote(i).result()`; stratus's includes the"
        " commit at the end of the invocation); read and 1 MiB rows"
        " inside the function around the file operations. Throughput is one at a time (1 /"
        " mean); the ratio is the row's p50 over stratus's in the same pair. The target's"
        " figure is the call minus a no-op call: stratus"
        f" {cell_us(small.get('stratus_fs_cost_p50_us'))}, native"
        f" {cell_us(small.get('native_fs_cost_p50_us'))}; the same transaction in the"
        f" client without a call (`app.fs`): p50"
        f" {cell_us(pick(r, 'fs', 'small_file.client_transaction.p50_us'))}.",
        "",
        *table_of(doc),
    ]


def fuse(r: Results, images: Path, link: Path) -> list[str]:
    doc = r.get("fuse")
    if doc is None:
        return ["", "## The FUSE mount", *_missing("fuse")]
    return [
        "",
        "## The FUSE mount: `stratus mount` (`bench/fuse.py`)",
        "",
        "Unmodified system calls (`os.open`, `os.write` / `os.read`, `os.close`) on three"
        " directories: the machine's file system, a minimal pyfuse3 pass-through of it"
        " (`bench/fuse_passthrough.py`: what FUSE and pyfuse3 cost by themselves) and a"
        " stratus volume mounted in the foreground, every FUSE request its own transaction."
        " Rounds alternate the order of the three and pool the samples. Throughput is one"
        " at a time (1 / mean); the ratio is the row's p50 over the stratus mount's for the"
        " same operation.",
        "",
        *table_of(doc),
    ]


def elastic(r: Results, images: Path, link: Path) -> list[str]:
    doc = r.get("elastic")
    if doc is None:
        return ["", "## Cold starts", *_missing("elastic")]
    warm = pick(r, "elastic", "memory.one_warm_executor") or {}
    zero = pick(r, "elastic", "memory.at_zero") or {}
    numpy_first = pick(r, "elastic", "cold_start_preload_numpy.first_ever_ms")
    return [
        "",
        "## Cold starts: a new executor from zero (`bench/elastic.py`)",
        "",
        "An embedded cluster whose pools empty after 0.1 s idle; each round waits until no"
        " executor is left, then makes one call. *Decision to served* runs from the"
        " coordinator's scale-up decision (`PoolStatus.changed_at`, wall clock) to the"
        " result in the caller's hands: the fork of the pre-imported server, the executor's"
        ' start, its hello, the code push and the call. With `preload=["numpy"]` the fork'
        f" server imports numpy once (the first such call took {cell_ms(numpy_first)}), later"
        " forks inherit it. The first call of a new function on a running executor pins it"
        " there and fetches its code (no fork). The peers are interpreters started for"
        " nothing and for what an executor imports: the floor of a cold start without a fork"
        " server. One at a time, so no throughput; the ratio is the row's p50 over the cold"
        f" start's. Scale to zero frees memory: with one warm executor the cluster is"
        f" {len(warm.get('processes', []))} processes, {megabytes(warm.get('total_rss_mb'))}"
        f" RSS ({megabytes(warm.get('total_pss_mb'))} PSS); at zero"
        f" {len(zero.get('processes', []))}, {megabytes(zero.get('total_rss_mb'))}"
        f" ({megabytes(zero.get('total_pss_mb'))}).",
        "",
        *table_of(doc),
    ]


def trace(r: Results, images: Path, link: Path) -> list[str]:
    doc = r.get("trace")
    if doc is None:
        return ["", "## Keep-alive on a replayed trace", *_missing("trace")]
    t = doc.get("trace", {})
    rows = [
        [
            row["policy"],
            f"{row['cold_start_pct']:.2f} % ({row['cold_starts']} of {row['calls']})",
            f"{row['idle_memory_mb_s_wall']:,.0f} MB·s",
            f"{row['idle_executor_seconds_wall']:,.1f}",
            f"{row['mean_executors_alive']:.2f}",
            f"{row['alone_cold_start_pct']:.2f} %, {row['alone_pool_executor_seconds_wall']:,.0f}",
        ]
        for row in doc.get("table", [])
    ]
    if len(rows) == 2:  # two decimals: the targets are ratios <= 1
        fixed, learned = doc["table"]

        def ratio_cell(key: str) -> str:
            base = fixed[key]
            return f"{learned[key] / base:.2f}x" if base else "-"

        rows.append(
            [
                "learned / fixed",
                ratio_cell("cold_start_pct"),
                ratio_cell("idle_memory_mb_s_wall"),
                ratio_cell("idle_executor_seconds_wall"),
                ratio_cell("mean_executors_alive"),
                f"{ratio_cell('alone_cold_start_pct')},"
                f" {ratio_cell('alone_pool_executor_seconds_wall')}",
            ]
        )
    lines = [
        "",
        "## Keep-alive: fixed 10 minutes versus learned, on a replayed trace (`bench/trace.py`)",
        "",
        f"A {t.get('source', '?')} trace in the Azure Functions 2019 format"
        f" ({t.get('functions')} functions: {', '.join(t.get('triggers', []))}; {t.get('calls')}"
        f" calls over {t.get('minutes')} trace minutes) replayed at"
        f" {t.get('wall_seconds_per_minute')} s per trace minute by two embedded clusters at"
        " once, one per policy: Azure's fixed 10-minute keep-alive and the hybrid histogram"
        " of *Serverless in the Wild* (ATC 2020), both scaled to the compressed time. A call"
        " is cold when the instance that served it was built after the call was issued;"
        " idle memory is the executors alive and running no call, sampled every"
        f" {pick(r, 'trace', 'settings.sample')} s, times an executor's mean PSS, in wall"
        " seconds (x 60 / the seconds per minute for trace seconds). The last column is the"
        " same trace through the pool-sizing state machine alone (a fake clock, no"
        " processes): what the policy decides, without the machine's noise.",
        "",
        *markdown_table(
            [
                "policy",
                "cold starts",
                "idle executor memory",
                "idle executor-seconds",
                "mean executors alive",
                "policy alone: cold, pool executor-s",
            ],
            rows,
        ),
    ]
    if doc.get("plot"):
        title = "Executors alive and call latency over the replayed trace"
        lines += ["", f"![{title}]({(link / doc['plot']).as_posix()})"]
    return lines


SECTIONS: list[Callable[[Results, Path, Path], list[str]]] = [
    calls,
    composition,
    put_get,
    memory,
    locality,
    state_access,
    serving,
    social,
    scaling,
    scaleout,
    fs,
    fuse,
    elastic,
    trace,
    gateway,
    store,
    transport,
]


def all_sections(results: Results, images: Path, link: Path) -> list[str]:
    """Every section in order; ``link`` is how the report refers to ``images``."""
    lines: list[str] = []
    for section in SECTIONS:
        lines += section(results, images, link)
    return lines
