"""The benchmark suite of issue 12: durable against DBOS Transact, awa-pg and
raw asyncpg, on one Postgres, in one run.

    make bench-suite                       # the release build, then this
    make bench-suite SUITE="--only W3,W4 --runs 3"
    .venv/bin/python bench/suite.py [--dsn URL] [--runs 3] [--quick] [--only W1,W2] [--out FILE]
                                    [--baseline FILE...]

Workloads (doc/performance.md describes each and what it measures); the
default path, what users write, comes first, a variant after it:
W1 one workflow of 1000 sequential steps (floor F1: 1000 autocommit inserts,
one connection); W2 200 workflows x 10 steps in flight (floor F2: 2000
concurrent inserts, pool of 16); W3 resume in a new process of a workflow
with 1000 completed steps, default options, restarted 2 s after the SIGKILL
(W3-grace0: session_grace=0, restarted at once), W3b with 100,000; W4 2000
one-step workflows on a queue of concurrency 50 as users write it, one
enqueue and one result per run, all at once (W4-batch: one enqueue_many,
nobody waiting; DBOS at 1 s and 10 ms polling, awa-pg); W5 10,000 workflows
x 10 steps in flight, peak RSS; M1 RSS after 1,000 and after 100,000 steps;
W6 1, 2, 4 executor processes draining 10,000 queued one-step workflows.
--only W3 takes W3 and W3-grace0, --only W4 W4 and W4-batch.

After the table, the targets: each with what was measured and whether it is
met; --baseline (an earlier run's JSON, e.g. of the engine before a change)
adds those stated against it.

Each measurement runs in a process of its own (bench/suite_<system>.py),
--runs times, systems interleaved (round-robin). Prints medians with min and
max and the ratios, writes every figure as JSON (bench/results/ or --out).
The peers run in their own venv, bench/.venv-peers, made here from
bench/requirements-peers.txt; each gets a database of its own on the
server of --dsn (durable_bench_dbos, durable_bench_awa), made afresh.
durable runs in schema durable_bench_suite of --dsn's database.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from suite_common import RESTART_AFTER_S

BENCH = Path(__file__).resolve().parent
PEERS_VENV = BENCH / ".venv-peers"
PEERS_PY = PEERS_VENV / "bin" / "python"
REQUIREMENTS = BENCH / "requirements-peers.txt"
LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"
DURABLE_SCHEMA = "durable_bench_suite"
DATABASES = {"dbos": "durable_bench_dbos", "awa": "durable_bench_awa"}
#: The suite's JSON layout: 2 since W3 and W4 measure the default path (the
#: earlier W3 and W4 are now W3-grace0 and W4-batch).
SUITE_VERSION = 2
RENAMED_IN_2 = {"W3": "W3-grace0", "W4": "W4-batch"}


@dataclass
class Child:
    """One measurement: a workload script of one system and its arguments."""

    system: str  # the column it shows in: durable, dbos, dbos-10ms, awa, raw
    script: str  # suite_durable.py ...
    workload: str  # what the script is asked to run (F1 for raw's W1...)
    size: int
    width: int = 0
    poll: float = 1.0


@dataclass
class Workload:
    key: str
    title: str
    children: list[Child]


@dataclass
class Metric:
    key: str
    label: str
    higher_is_better: bool


@dataclass
class Row:
    """A line of the table: one metric of a workload, durable against two others."""

    workload: str
    metric: Metric
    peer: str | None  # the DBOS column
    floor: str | None  # the floor (or awa) column
    note: str = ""


STEPS_PER_S = Metric("steps_per_s", "steps/s", True)
WORKFLOWS_PER_S = Metric("workflows_per_s", "workflows/s", True)
P50 = Metric("p50_ms", "p50 ms", False)
P99 = Metric("p99_ms", "p99 ms", False)
RESUME = Metric("resume_ms", "resume ms", False)
START_TO_END = Metric("start_to_step_end_ms", "Ctx.start → new step's end ms", False)
TAKEOVER = Metric("takeover_ms", "of which takeover (Ctx.start) ms", False)
ENQUEUE = Metric("enqueue_s", "until every enqueue returned s", False)
PROCESS = Metric("start_and_imports_ms", "of which process start + imports ms", False)
PEAK = Metric("peak_rss_mb", "peak RSS MB", False)
GROWTH = Metric("growth_mb", "RSS growth MB", False)
RSS_1K = Metric("rss_1k_mb", "RSS after 1k MB", False)
RSS_END = Metric("rss_end_mb", "RSS at end MB", False)


def family(key: str) -> str:
    """A workload's family, for --only and --skip: W3 of W3-grace0, W6 of W6/2."""
    return re.split(r"[/-]", key)[0]


def plan(quick: bool) -> list[Workload]:
    """The workloads at full size, or small ones (--quick) to check the harness."""

    def n(full: int, small: int) -> int:
        return small if quick else full

    d, b, r, a = "suite_durable.py", "suite_dbos.py", "suite_raw.py", "suite_awa.py"
    both = ("durable", d), ("dbos", b)
    w1, w2 = n(1000, 100), n(200, 20)
    w3b, w3b_template = n(100_000, 5000), n(1000, 100)
    w4, w5, m1, w6 = n(2000, 200), n(10_000, 500), n(100_000, 5000), n(10_000, 500)
    return [
        Workload("W1", f"one workflow, {w1} sequential steps (F1: {w1} autocommit inserts, 1 connection)",
                 [*(Child(s, f, "W1", w1) for s, f in both), Child("raw", r, "F1", w1)]),
        Workload("W2", f"{w2} workflows x 10 steps in flight (F2: {w2 * 10} concurrent inserts, pool of 16)",
                 [*(Child(s, f, "W2", 10, w2) for s, f in both), Child("raw", r, "F2", w2 * 10, 16)]),
        Workload("W3", f"resume in a new process, {w1} completed steps, default options, "
                       f"restarted {RESTART_AFTER_S:g} s after the SIGKILL", [Child(s, f, "W3", w1) for s, f in both]),
        Workload("W3-grace0", f"resume in a new process, {w1} completed steps, the crashed process "
                              "with session_grace=0, restarted at once",
                 [Child(s, f, "W3-grace0", w1) for s, f in both]),
        Workload("W3b", f"resume in a new process, {w3b:,} completed steps (bulk copied)",
                 [Child(s, f, "W3b", w3b, w3b_template) for s, f in both]),
        *(Workload(key, f"{w4} one-step workflows, queue of concurrency 50, 1 process, {shape}",
                   [Child("durable", d, key, w4), Child("dbos", b, key, w4, poll=1.0),
                    Child("dbos-10ms", b, key, w4, poll=0.01), Child("awa", a, key, w4)])
          for key, shape in (("W4", "as users write it: one enqueue + one result per run, all at once"),
                             ("W4-batch", "one enqueue_many, nobody waiting"))),
        Workload("W5", f"{w5:,} workflows x 10 steps in flight, 1 process",
                 [Child(s, f, "W5", 10, w5) for s, f in both]),
        Workload("M1", f"RSS after 1,000 and after {m1:,} steps, 1 process",
                 [Child(s, f, "M1", m1) for s, f in both]),
        *(Workload(f"W6/{p}", f"{p} executor process{'es' if p > 1 else ''} drain {w6:,} one-step workflows",
                   [Child(s, f, "W6", w6, p) for s, f in both]) for p in (1, 2, 4)),
    ]


#: Under the table, for the workloads shown (any of the keys): what their figures are.
WORKLOAD_NOTES = {
    ("W3", "W3-grace0"):
        "- W3, W3-grace0: resume ms from the new process's spawn to the new step's body (DBOS: the same; it "
        "recovers the workflow at launch, so 'Ctx.start → new step's end' and the takeover are durable's only).",
    ("W4",):
        "- W4: per run, from its enqueue call to its result in hand (client clock); DBOS: enqueue_async + "
        "get_result (its default 1 s polling); awa-pg offers no wait for a job's completion or result: one "
        "insert per job, and its latency ends at the handler's end, seen in the process.",
    ("W4-batch",):
        "- W4-batch: enqueue → completion on the database's clock (awa-pg: insert_many_copy → handler end; "
        "DBOS: one enqueue_async each, it has no batch enqueue).",
}


def rows() -> list[Row]:
    return [
        Row("W1", STEPS_PER_S, "dbos", "raw"), Row("W1", P50, "dbos", "raw"), Row("W1", P99, "dbos", "raw"),
        Row("W2", STEPS_PER_S, "dbos", "raw"), Row("W2", P99, "dbos", "raw"),
        Row("W3", START_TO_END, None, None), Row("W3", TAKEOVER, None, None),
        Row("W3", RESUME, "dbos", None), Row("W3", PROCESS, "dbos", None),
        Row("W3-grace0", START_TO_END, None, None), Row("W3-grace0", RESUME, "dbos", None),
        Row("W3-grace0", PROCESS, "dbos", None),
        Row("W3b", RESUME, "dbos", None), Row("W3b", PROCESS, "dbos", None),
        *(row for key in ("W4", "W4-batch") for row in (
            Row(key, WORKFLOWS_PER_S, "dbos", "awa", "DBOS at 1 s polling; awa-pg"),
            Row(key, WORKFLOWS_PER_S, "dbos-10ms", None, "DBOS at 10 ms polling"),
            Row(key, P50, "dbos", "awa"), Row(key, P99, "dbos", "awa"),
            Row(key, ENQUEUE, "dbos", "awa"),
        )),
        Row("W5", STEPS_PER_S, "dbos", None), Row("W5", PEAK, "dbos", None),
        Row("M1", RSS_1K, "dbos", None), Row("M1", RSS_END, "dbos", None), Row("M1", GROWTH, "dbos", None),
        *(Row(f"W6/{p}", WORKFLOWS_PER_S, "dbos", None) for p in (1, 2, 4)),
    ]


# -- the peers' venv ------------------------------------------------------------------


def ensure_peers() -> dict[str, str]:
    """Makes bench/.venv-peers if missing or stale; returns, for each peer
    that cannot run, why (the suite goes on without it)."""
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = PEERS_VENV / ".requirements-sha256"
    if not stamp.exists() or stamp.read_text() != wanted:
        print(f"installing the peers into {PEERS_VENV} (pip, {REQUIREMENTS.name})", flush=True)
        made = subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEERS_VENV)], check=False)
        if made.returncode == 0:
            pip = [str(PEERS_PY), "-m", "pip", "install", "--quiet"]
            subprocess.run([*pip, "--upgrade", "pip"], check=False)
            installed = subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=False)
            if installed.returncode == 0:
                stamp.write_text(wanted)
    missing: dict[str, str] = {}
    for system, module in (("dbos", "dbos"), ("awa", "awa")):
        probe = subprocess.run([str(PEERS_PY), "-c", f"import {module}"], capture_output=True, text=True, check=False) \
            if PEERS_PY.exists() else None
        if probe is None or probe.returncode != 0:
            reason = probe.stderr.strip().splitlines()[-1] if probe and probe.stderr.strip() else "no venv"
            missing[system] = f"could not install or import {module}: {reason}"
    if "dbos" in missing:
        missing["dbos-10ms"] = missing["dbos"]
    return missing


# -- databases ----------------------------------------------------------------------


def with_database(dsn: str, database: str) -> str:
    url = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(url._replace(path=f"/{database}"))


async def fresh_databases(dsn: str) -> dict[str, str]:
    """Every system's DSN, its database or schema made empty."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {DURABLE_SCHEMA} CASCADE")
        await conn.execute("DROP TABLE IF EXISTS bench_raw_rows")
        for database in DATABASES.values():
            await conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            await conn.execute(f"CREATE DATABASE {database}")
    finally:
        await conn.close()
    peers = {system: with_database(dsn, database) for system, database in DATABASES.items()}
    return {"durable": dsn, "raw": dsn, "dbos": peers["dbos"], "dbos-10ms": peers["dbos"], "awa": peers["awa"]}


async def machine(dsn: str, quick: bool, runs: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        version = await conn.fetchval("SELECT version()")
        settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("fsync", "synchronous_commit", "wal_sync_method", "shared_buffers")
        }
    finally:
        await conn.close()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=BENCH,
                            check=False).stdout.strip()
    with open("/proc/meminfo") as meminfo:
        mem_kib = int(meminfo.readline().split()[1])
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": version,
        "postgres_settings": settings,
        "commit": commit,
        "quick": quick,
        "runs": runs,
        "suite_version": SUITE_VERSION,
    }


# -- running --------------------------------------------------------------------------


@dataclass
class Results:
    figures: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)

    def add(self, workload: str, system: str, figures: dict[str, Any]) -> None:
        self.figures.setdefault(workload, {}).setdefault(system, []).append(figures)

    def values(self, workload: str, system: str, metric: str) -> list[float]:
        return [float(f[metric]) for f in self.figures.get(workload, {}).get(system, []) if metric in f]

    def failed(self, workload: str, system: str) -> str | None:
        errors = [f["error"] for f in self.figures.get(workload, {}).get(system, []) if "error" in f]
        return errors[-1] if errors else None


async def run_child(child: Child, dsn: str, timeout: float) -> dict[str, Any]:
    python = sys.executable if child.system in ("durable", "raw") else str(PEERS_PY)
    args = [python, str(BENCH / child.script), child.workload, "--dsn", dsn, "--size", str(child.size),
            "--width", str(child.width), "--poll", str(child.poll)]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(out.decode().splitlines()):
        if line.startswith("{"):
            figures: dict[str, Any] = json.loads(line)
            return figures
    tail = " | ".join(err.decode().strip().splitlines()[-3:])
    return {"error": f"exit code {proc.returncode}: {tail}"}


def brief(figures: dict[str, Any]) -> str:
    if "error" in figures:
        return f"FAILED: {figures['error']}"
    return ", ".join(f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())


async def measure(workloads: list[Workload], dsns: dict[str, str], missing: dict[str, str], runs: int,
                  timeout: float, save: Callable[[Results], None], skip: set[str]) -> Results:
    """Each workload ``runs`` times, its systems one after the other in each
    round; a system that fails is not run again for that workload. ``save``
    gets the figures after each measurement (an interrupted run keeps them).
    ``skip``: ``system:workload`` pairs not measured."""
    results = Results()
    for workload in workloads:
        print(f"\n{workload.key}: {workload.title}", flush=True)
        for child in workload.children:
            if child.system in missing:
                results.add(workload.key, child.system, {"error": missing[child.system]})
            elif {f"{child.system}:{workload.key}", f"{child.system}:{family(workload.key)}"} & skip:
                results.add(workload.key, child.system, {"error": "not measured in this run (--skip)"})
        for run in range(1, runs + 1):
            for child in workload.children:
                if results.failed(workload.key, child.system):
                    continue
                started = time.perf_counter()
                figures = await run_child(child, dsns[child.system], timeout)
                results.add(workload.key, child.system, figures)
                save(results)
                took = time.perf_counter() - started
                print(f"  run {run}/{runs} {child.system:<10} ({took:5.1f} s) {brief(figures)}", flush=True)
    return results


# -- the table ------------------------------------------------------------------------


def fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"


def cell(results: Results, workload: str, system: str | None, metric: Metric) -> str:
    if system is None:
        return ""
    values = results.values(workload, system, metric.key)
    if not values:
        error = results.failed(workload, system)
        return "not measured" if error is None or error.startswith("not measured") else "failed"
    label = {"dbos-10ms": "", "awa": "awa ", "raw": ""}.get(system, "")
    if len(values) == 1:
        return f"{label}{fmt(values[0])}"
    return f"{label}{fmt(statistics.median(values))} [{fmt(min(values))}–{fmt(max(values))}]"


def ratio(results: Results, workload: str, other: str | None, metric: Metric) -> str:
    """How many times better durable is: throughput durable/other, times and sizes other/durable."""
    if other is None:
        return ""
    mine, theirs = results.values(workload, "durable", metric.key), results.values(workload, other, metric.key)
    if not mine or not theirs:
        return ""
    a, b = statistics.median(mine), statistics.median(theirs)
    if a <= 0 or b <= 0:
        return ""
    return f"{a / b if metric.higher_is_better else b / a:.2f}×"


def table(results: Results, workloads: list[Workload]) -> str:
    titles = {w.key: w.title for w in workloads}
    lines = [
        "| workload | metric | durable | DBOS | floor (raw asyncpg) or awa-pg | durable vs DBOS | durable vs floor/awa |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows():
        if row.workload not in titles:
            continue
        name = row.workload + (f" ({row.note})" if row.note else "")
        lines.append(
            f"| {name} | {row.metric.label} | {cell(results, row.workload, 'durable', row.metric)} "
            f"| {cell(results, row.workload, row.peer, row.metric)} "
            f"| {cell(results, row.workload, row.floor, row.metric)} "
            f"| {ratio(results, row.workload, row.peer, row.metric)} "
            f"| {ratio(results, row.workload, row.floor, row.metric)} |"
        )
    legend = [f"- {w.key}: {w.title}" for w in workloads]
    failures = [
        f"- {workload} {system}: {results.failed(workload, system)}"
        for workload, systems in results.figures.items()
        for system in systems
        if results.failed(workload, system)
    ]
    notes = ["", "Medians [min–max]. 'durable vs X': how many times better durable is "
             "(throughput durable/X; times and memory X/durable).", *legend]
    notes += [note for keys, note in WORKLOAD_NOTES.items() if set(keys) & titles.keys()]
    if failures:
        notes += ["", "Not measured:", *failures]
    return "\n".join([*lines, *notes])


# -- the targets -------------------------------------------------------------------

#: The ``other`` of a target stated against an earlier run (--baseline).
BASELINE = "baseline"


@dataclass
class Target:
    """A goal: durable at least ``bound`` times better than ``other`` (a
    system of this run, or durable in the baseline run), or, ``other``
    None, durable's own median at most ``bound``."""

    text: str
    workload: str
    metric: Metric
    other: str | None
    bound: float


def targets(quick: bool) -> list[Target]:
    enqueues = 200 if quick else 2000
    return [
        Target("W4 as users write it ≥ 60× DBOS (1 s polling)", "W4", WORKFLOWS_PER_S, "dbos", 60),
        Target("W4 as users write it ≥ 20× DBOS (10 ms polling)", "W4", WORKFLOWS_PER_S, "dbos-10ms", 20),
        Target("W4 as users write it ≥ 5× awa-pg", "W4", WORKFLOWS_PER_S, "awa", 5),
        Target(f"{enqueues} concurrent single enqueues (W4) ≥ 10× faster than the baseline", "W4", ENQUEUE,
               BASELINE, 10),
        Target(f"W3, default options, restarted {RESTART_AFTER_S:g} s after the SIGKILL: Ctx.start → end of "
               "the new step ≤ 50 ms", "W3", START_TO_END, None, 50),
        Target("W1 ≥ 0.85× F1", "W1", STEPS_PER_S, "raw", 0.85),
        Target("W2 ≥ 4× F2", "W2", STEPS_PER_S, "raw", 4),
        Target("W3b resume unchanged or better than the baseline (0.9× allows the machine's noise)", "W3b",
               RESUME, BASELINE, 0.9),
        Target("W5 steps/s unchanged or better than the baseline", "W5", STEPS_PER_S, BASELINE, 0.9),
        Target("M1 RSS at end unchanged or better than the baseline", "M1", RSS_END, BASELINE, 0.9),
    ]


def median(results: Results, workload: str, system: str, metric: Metric) -> float | None:
    values = results.values(workload, system, metric.key)
    return statistics.median(values) if values else None


def judge(target: Target, results: Results, baseline: Results | None) -> tuple[str, str]:
    """What was measured for ``target``, and whether it is met."""
    mine = median(results, target.workload, "durable", target.metric)
    if mine is None:
        return "not measured", ""
    unit = target.metric.label
    if target.other is None:
        return f"{fmt(mine)} ({unit})", "met" if mine <= target.bound else "not met"
    if target.other == BASELINE:
        theirs = None if baseline is None else median(baseline, target.workload, "durable", target.metric)
        if theirs is None:
            missing = "no baseline (--baseline FILE)" if baseline is None else "not in the baseline"
            return f"{fmt(mine)} ({unit}); {missing}", ""
        against = "baseline"
    else:
        theirs = median(results, target.workload, target.other, target.metric)
        if theirs is None:
            return f"{fmt(mine)} ({unit}); {target.other} not measured", ""
        against = target.other
    if mine <= 0 or theirs <= 0:
        return f"{fmt(mine)} against {fmt(theirs)} ({unit})", ""
    times = mine / theirs if target.metric.higher_is_better else theirs / mine
    verdict = "met" if times >= target.bound else "not met"
    return f"{times:.2f}× ({fmt(mine)} against {against} {fmt(theirs)} {unit})", verdict


def targets_table(results: Results, baseline: Results | None, quick: bool) -> list[dict[str, str]]:
    rows_ = []
    for target in targets(quick):
        if target.workload not in results.figures:
            continue
        measured, verdict = judge(target, results, baseline)
        rows_.append({"target": target.text, "measured": measured, "verdict": verdict})
    return rows_


def targets_text(judged: list[dict[str, str]]) -> str:
    if not judged:
        return ""
    lines = ["| target | measured | |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {t['verdict']} |" for t in judged]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", default=os.environ.get("DURABLE_DATABASE_URL") or LOCAL,
                   help="a postgresql:// URL (default: $DURABLE_DATABASE_URL, else the local server)")
    p.add_argument("--runs", type=int, default=3, help="rounds of each workload (default 3)")
    p.add_argument("--quick", action="store_true", help="small sizes, to check the harness end to end")
    p.add_argument("--only", default="",
                   help="comma-separated workloads (W1,W2,W3,W3-grace0,W3b,W4,W4-batch,W5,M1,W6): "
                        "a family (W3, W4, W6) takes its variants")
    p.add_argument("--skip", default="",
                   help="comma-separated system:workload pairs not to measure, e.g. dbos:M1,dbos:W5 "
                        "(those that take DBOS tens of minutes)")
    p.add_argument("--timeout", type=float, default=1200, help="seconds one measurement may take (default 1200)")
    p.add_argument("--out", type=Path, help="where the JSON goes (default bench/results/suite-<time>.json)")
    p.add_argument("--table-from", type=Path, nargs="+", metavar="JSON",
                   help="measure nothing: print the table of these outputs (a later file's workloads win)")
    p.add_argument("--baseline", type=Path, nargs="+", metavar="JSON",
                   help="an earlier run's output (e.g. the engine before a change), for the targets "
                        "stated against it (a later file's workloads win)")
    return p.parse_args()


def load(paths: list[Path]) -> tuple[Results, bool]:
    """The figures of earlier runs, merged (a later file's workloads win), in
    this suite's names (an output older than SUITE_VERSION 2 had the batch
    variants under W3 and W4); whether they were --quick."""
    merged = Results()
    quick = False
    for path in paths:
        saved = json.loads(path.read_text())
        quick = bool(saved["machine"]["quick"])
        figures: dict[str, Any] = saved["figures"]
        if saved["machine"].get("suite_version", 1) < 2:
            figures = {RENAMED_IN_2.get(key, key): value for key, value in figures.items()}
        merged.figures.update(figures)
    order = [w.key for w in plan(quick)]
    merged.figures = dict(sorted(merged.figures.items(), key=lambda kv: order.index(kv[0])
                                 if kv[0] in order else len(order)))
    return merged, quick


def report(results: Results, workloads: list[Workload], baseline: Results | None, quick: bool) -> str:
    """The table, then the targets."""
    judged = targets_text(targets_table(results, baseline, quick))
    return table(results, workloads) + (f"\n\nTargets:\n\n{judged}" if judged else "")


def table_from(paths: list[Path], baseline: Results | None) -> str:
    """The table of earlier runs, e.g. a full run and a rerun of some workloads."""
    merged, quick = load(paths)
    return report(merged, [w for w in plan(quick) if w.key in merged.figures], baseline, quick)


async def main() -> None:
    args = parse_args()
    baseline, baseline_quick = load(args.baseline) if args.baseline else (None, False)
    quick = load(args.table_from)[1] if args.table_from else args.quick
    if baseline is not None and baseline_quick != quick:
        print("warning: the baseline and this run differ in --quick: their sizes differ", flush=True)
    if args.table_from:
        print(table_from(args.table_from, baseline))
        return
    workloads = plan(args.quick)
    if args.only:
        wanted = {w.strip() for w in args.only.split(",")}
        workloads = [w for w in workloads if w.key in wanted or family(w.key) in wanted]
    missing = ensure_peers()
    for system, reason in missing.items():
        print(f"not measured: {system}: {reason}", flush=True)
    dsns = await fresh_databases(args.dsn)
    about = await machine(args.dsn, args.quick, args.runs)
    print(f"{about['postgres']}; {about['cpus']} CPUs, {about['memory_gib']} GiB; commit {about['commit']}")
    out = args.out or BENCH / "results" / f"suite-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(results: Results) -> None:
        text = report(results, workloads, baseline, args.quick)
        judged = targets_table(results, baseline, args.quick)
        out.write_text(json.dumps({"machine": about, "figures": results.figures, "table": text, "targets": judged},
                                  indent=1) + "\n")

    skip = {pair.strip() for pair in args.skip.split(",") if pair.strip()}
    results = await measure(workloads, dsns, missing, args.runs, args.timeout, save, skip)
    print("\n" + report(results, workloads, baseline, args.quick))
    print(f"\nfigures: {out}")


if __name__ == "__main__":
    asyncio.run(main())
