"""Rollout benchmark: one gate evaluation and the monitoring queries of a release with 100k
deployments, on SQLite and on PostgreSQL, in the same run (DESIGN §9; issue 3).

    .venv/bin/python bench/rollout.py                          # 100k devices, 7 rounds, both backends
    .venv/bin/python bench/rollout.py --devices 20000 --rounds 3 --backends sqlite

Per backend the bench re-invokes itself (--role child) with DATABASE_URL / WALLE_VAR_DIR set
before django.setup(): SQLite is a file in a temp dir (the embedded settings: WAL,
synchronous=NORMAL); PostgreSQL is a throwaway database on 127.0.0.1:5432 (tests.live.PG_URL)
created here and dropped afterwards — skipped, with the reason printed, if it does not answer.

Load (timed, not the metric): one app, N devices, one running release of 3 stages
(1% -> 20% -> 100%, the current stage is the last one, soak not over) whose deployments cover
all N devices with real murmur3 buckets; mixed states (earlier stages mostly succeeded, the
current one with ~8% in flight and ~5% pending on offline devices) and ~3 DeploymentEvents per
deployment spread over 60 minutes. PostgreSQL gets VACUUM ANALYZE after the load (what
autovacuum reaches in steady state); SQLite is left as Django creates it (no ANALYZE).

Operations, rounds interleaved (each round runs every operation once), medians and p90:

  evaluate: tick          evaluate_release(release, now=T0) where nothing changes ("waiting")
  evaluate: tick (rb)     the same inside an outer transaction that is rolled back (the
                          baseline for the next row, which must be undone to repeat it)
  evaluate: error gate    the error gate trips (stage 3's error_gate lowered to 1% inside the
                          outer transaction) -> top failure reason, pause; rolled back
  admit_stage (no-op)    the part of the tick that rescans the fleet (admits nobody here)
  time_series             releases.monitoring.time_series (per-minute transitions)
  stage_counts            releases.rollout.stage_counts (current stage: ~80% of deployments)
  deployment_counts       releases.monitoring.deployment_counts
  stage_breakdown         releases.monitoring.stage_breakdown

The JSON also holds (`explain`) the query plans (EXPLAIN QUERY PLAN / EXPLAIN (ANALYZE, BUFFERS)) and a per-query profile of one
tick. Timings are never asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT_DIR = ROOT / "bench" / "out"
STAGES = [
    {"basis_points": 100, "soak_s": 600},
    {"basis_points": 2000, "soak_s": 600},
    {"basis_points": 10000, "soak_s": 86400},
]
MODELS = [f"model-{i:02d}" for i in range(30)]
REGIONS = ["eu", "us", "apac", "latam", "cn"]


def pct(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# ---------------------------------------------------------------------------------------------
# child: one backend, Django configured from the environment


@dataclass
class Scenario:
    """The loaded database: one running release at its last stage, its clock and backend."""

    release: Any
    now: datetime
    vendor: str


def child_main(args) -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "walle_web.settings")
    django.setup()

    from django.core.management import call_command
    from django.db import connection

    result: dict = {"backend": args.backend, "vendor": connection.vendor, "devices": args.devices}
    t = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    result["migrate_s"] = round(time.perf_counter() - t, 2)

    scenario = load(args, result)
    ops = operations(scenario)
    check(scenario, ops, result)
    times = measure(ops, args.rounds, args.backend)
    result.update(explain(scenario, ops))
    result["ops"] = {
        name: {
            "median_ms": round(statistics.median(v), 2),
            "p90_ms": round(pct(v, 0.9), 2),
            "min_ms": round(min(v), 2),
            "rounds": len(v),
            "all_ms": [round(x, 2) for x in v],
        }
        for name, v in times.items()
    }
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))


def load(args, result: dict) -> Scenario:
    """N devices, one running release of 3 stages over them, ~3 events per deployment."""
    from django.db import connection
    from django.db.models import Count
    from django.utils import timezone

    from accounts.models import App
    from devices import targeting
    from devices.models import Device
    from releases import policy
    from releases.choices import DeploymentState as S
    from releases.choices import ReleaseState
    from releases.models import Deployment, DeploymentEvent, Release
    from tasks.models import Task, TaskVersion

    vendor = connection.vendor

    rng = random.Random(args.seed)
    T0 = timezone.now().replace(microsecond=0)
    start = T0 - timedelta(minutes=60)
    # bulk_create would otherwise stamp every row with now()
    for model, name in (
        (Device, "enrolled_at"),
        (Deployment, "created_at"),
        (Deployment, "updated_at"),
        (DeploymentEvent, "at"),
    ):
        f = model._meta.get_field(name)
        f.auto_now_add = False
        f.auto_now = False

    load: dict[str, float] = {}
    t = time.perf_counter()
    app = App.objects.create(slug="bench", name="bench")
    task = Task.objects.create(app=app, name="ranker")
    v1 = TaskVersion.objects.create(
        task=task, number=1, entry_point="main.py", manifest={}, digest="a" * 64, signature="x"
    )
    v2 = TaskVersion.objects.create(
        task=task,
        number=2,
        parent=v1,
        entry_point="main.py",
        manifest={},
        digest="b" * 64,
        signature="x",
    )
    stages_full, errs = policy.normalize_stages(STAGES)
    assert not errs, errs
    delivery_full, errs = policy.normalize_delivery({})
    assert not errs, errs
    release = Release.objects.create(
        app=app,
        task=task,
        version=v2,
        name="bench",
        target={},
        stages=stages_full,
        delivery=delivery_full,
        salt="benchsalt",
        state=ReleaseState.RUNNING,
        current_stage=2,
        started_at=start,
        stage_started_at=T0 - timedelta(minutes=25),
        last_notify_at=T0 - timedelta(seconds=2),
    )

    n = args.devices
    uids = [f"dev-{i:07d}" for i in range(n)]
    buckets = [targeting.bucket(release.salt, u) for u in uids]
    stage_of = [0 if b < 100 else 1 if b < 2000 else 2 for b in buckets]
    # state per device
    states: list[str] = []
    for st in stage_of:
        r = rng.random()
        if st < 2:
            s = S.SUCCEEDED if r < 0.97 else S.FAILED if r < 0.99 else S.TIMED_OUT
        else:
            if r < 0.85:
                s = S.SUCCEEDED
            elif r < 0.865:
                s = S.FAILED
            elif r < 0.87:
                s = S.TIMED_OUT
            elif r < 0.90:
                s = S.NOTIFIED
            elif r < 0.93:
                s = S.DOWNLOADING
            elif r < 0.95:
                s = S.INSTALLED
            else:
                s = S.PENDING
        states.append(s)
    devices = []
    for i, u in enumerate(uids):
        # pending deployments belong to offline devices (online ones would be rung at once)
        online = states[i] != S.PENDING and rng.random() < 0.35
        devices.append(
            Device(
                app=app,
                uid=u,
                token_hash="0" * 64,
                app_version=f"5.{rng.randint(0, 9)}.{rng.randint(0, 20)}",
                os=rng.choice(("android", "ios")),
                os_version=f"{rng.randint(10, 17)}.0",
                model=MODELS[min(int(rng.expovariate(0.2)), len(MODELS) - 1)],
                region=rng.choice(REGIONS),
                tags=["beta"] if rng.random() < 0.1 else [],
                engine_version="1.0.0",
                online=online,
                last_seen=T0 - timedelta(seconds=rng.randint(0, 3600)),
                enrolled_at=start - timedelta(days=rng.randint(1, 300)),
            )
        )
    Device.objects.bulk_create(devices, batch_size=args.batch)
    load["devices_s"] = time.perf_counter() - t
    device_ids = list(Device.objects.filter(app=app).order_by("id").values_list("id", flat=True))
    del devices

    t = time.perf_counter()
    # the stage's window of the last hour: stage 1 -60..-50 min, stage 2 -50..-25, stage 3 -25..-1
    windows = {0: (60, 50), 1: (50, 25), 2: (25, 1)}
    deps = []
    notified = []
    for i in range(n):
        s = states[i]
        hi, lo = windows[stage_of[i]]
        at = T0 - timedelta(seconds=rng.uniform(lo * 60, hi * 60))
        notified.append(at)
        final = s in (S.SUCCEEDED, S.FAILED, S.TIMED_OUT)
        failed_code = ""
        if s == S.FAILED:
            failed_code = "E_ENGINE_OP" if rng.random() < 0.7 else "E_DOWNLOAD"
        elif s == S.TIMED_OUT:
            failed_code = "timeout"
        deps.append(
            Deployment(
                release=release,
                device_id=device_ids[i],
                bucket=buckets[i],
                stage=stage_of[i],
                state=s,
                attempts=0 if s in (S.PENDING, S.NOTIFIED) else 1,
                error_code=failed_code,
                error_message="operator Foo not supported" if failed_code == "E_ENGINE_OP" else "",
                created_at=T0 - timedelta(minutes=windows[stage_of[i]][0]),
                updated_at=at,
                notified_at=None if s == S.PENDING else at,
                finished_at=at + timedelta(seconds=45) if final else None,
            )
        )
    Deployment.objects.bulk_create(deps, batch_size=args.batch)
    load["deployments_s"] = time.perf_counter() - t
    dep_ids = list(
        Deployment.objects.filter(release=release).order_by("id").values_list("id", flat=True)
    )
    del deps

    t = time.perf_counter()
    paths = {
        S.SUCCEEDED: (S.DOWNLOADING, S.INSTALLED, S.SUCCEEDED),
        S.FAILED: (S.DOWNLOADING, S.FAILED),
        S.TIMED_OUT: (S.DOWNLOADING, S.TIMED_OUT),
        S.NOTIFIED: (),
        S.DOWNLOADING: (S.DOWNLOADING,),
        S.INSTALLED: (S.DOWNLOADING, S.INSTALLED),
        S.PENDING: (),
    }
    n_events = 0
    batch = []
    for i in range(n):
        at = notified[i]
        for k, st in enumerate(paths[states[i]]):
            at = at + timedelta(seconds=rng.uniform(2, 40) if k < 2 else 1)
            batch.append(
                DeploymentEvent(
                    deployment_id=dep_ids[i],
                    state=st,
                    source="server" if st == S.TIMED_OUT else "device",
                    error_code="E_ENGINE_OP" if st == S.FAILED else "",
                    at=min(at, T0),
                )
            )
        if len(batch) >= 50_000:
            DeploymentEvent.objects.bulk_create(batch, batch_size=args.batch)
            n_events += len(batch)
            batch = []
    DeploymentEvent.objects.bulk_create(batch, batch_size=args.batch)
    n_events += len(batch)
    load["events_s"] = time.perf_counter() - t
    result["events"] = n_events

    t = time.perf_counter()
    if vendor == "postgresql":
        with connection.cursor() as c:
            c.execute("VACUUM ANALYZE")
    load["analyze_s"] = time.perf_counter() - t
    result["load_s"] = {k: round(v, 2) for k, v in load.items()}
    counts: dict[str, dict[str, int]] = {}

    for row in (
        Deployment.objects.filter(release=release)
        .values("stage", "state")
        .annotate(n=Count("id"))
        .order_by("stage", "state")
    ):
        counts.setdefault(f"stage {row['stage'] + 1}", {})[row["state"]] = row["n"]
    result["data"] = counts
    return Scenario(release=release, now=T0, vendor=vendor)


def operations(scenario: Scenario) -> dict[str, Callable[[], Any]]:
    """The timed operations, by row name; the state-changing ones are rolled back."""
    from django.db import transaction

    from releases import monitoring, rollout, services
    from releases.models import Release

    release, T0 = scenario.release, scenario.now

    class Rollback(Exception):
        pass

    def rolled_back(fn):
        def run():
            out = None
            try:
                with transaction.atomic():
                    out = fn()
                    raise Rollback
            except Rollback:
                pass
            return out

        return run

    def tick():
        return rollout.evaluate_release(Release(pk=release.pk), now=T0)

    def trip():
        r = Release.objects.get(pk=release.pk)
        stages = [dict(s) for s in r.stages]
        stages[2]["error_gate"] = 0.01
        Release.objects.filter(pk=release.pk).update(stages=stages)
        return rollout.evaluate_release(Release(pk=release.pk), now=T0)

    def admit():
        r = Release.objects.get(pk=release.pk)
        with transaction.atomic():
            return services.admit_stage(r, T0)

    def rel():
        return Release.objects.get(pk=release.pk)

    ops = {
        "evaluate: tick": tick,
        "evaluate: tick (rb)": rolled_back(tick),
        "evaluate: error gate": rolled_back(trip),
        "admit_stage (no-op)": admit,
        "time_series": lambda: monitoring.time_series(rel()),
        "stage_counts": lambda: rollout.stage_counts(rel()),
        "deployment_counts": lambda: monitoring.deployment_counts(rel()),
        "stage_breakdown": lambda: monitoring.stage_breakdown(rel()),
    }
    return ops


def check(scenario: Scenario, ops: dict, result: dict) -> None:
    """One untimed warm-up round that also proves the scenario is what the row names say."""
    from releases.choices import ReleaseState
    from releases.models import Release

    release = scenario.release

    # sanity: the scenario is what the row names say (not a timing assertion)
    expect = {
        "evaluate: tick": "waiting",
        "evaluate: tick (rb)": "waiting",
        "evaluate: error gate": "paused",
        "admit_stage (no-op)": 0,
    }
    outputs = {}
    for name, fn in ops.items():  # warm-up round, not timed
        out = fn()
        outputs[name] = out
        if name in expect and out != expect[name]:
            raise SystemExit(f"{name}: expected {expect[name]!r}, got {out!r}")
    ts = outputs["time_series"]
    result["time_series_rows"] = len(ts)
    result["stage_counts_out"] = outputs["stage_counts"]
    assert Release.objects.get(pk=release.pk).state == ReleaseState.RUNNING


def measure(opset: dict, rounds: int, backend: str) -> dict[str, list[float]]:
    """Every operation once per round, the order reversed every other round."""
    times: dict[str, list[float]] = {k: [] for k in opset}
    for r in range(rounds):
        order = list(opset)
        if r % 2:
            order.reverse()
        for name in order:
            t0 = time.perf_counter()
            opset[name]()
            times[name].append((time.perf_counter() - t0) * 1000)
        print(f"  [{backend}] round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return times


def explain(scenario: Scenario, ops: dict) -> dict:
    """Where the time goes: a per-query profile of a tick and of the error-gate step, a
    cProfile of a tick, and the query plans of the monitoring queries and of every SELECT
    of a tick."""
    from django.db import connection

    from releases import monitoring, rollout
    from releases.models import Release

    vendor = scenario.vendor
    tick = ops["evaluate: tick"]
    result: dict = {}

    def rel():
        return Release.objects.get(pk=scenario.release.pk)

    def profile(fn) -> dict:
        queries: list[dict] = []

        def wrapper(execute, sql, params, many, context):
            t0 = time.perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                queries.append(
                    {
                        "ms": round((time.perf_counter() - t0) * 1000, 2),
                        "sql": sql[:300],
                        "params": len(params or ()) if not many else "many",
                    }
                )

        t0 = time.perf_counter()
        with connection.execute_wrapper(wrapper):
            fn()
        total = (time.perf_counter() - t0) * 1000
        sql_ms = sum(q["ms"] for q in queries)
        return {
            "total_ms": round(total, 1),
            "sql_ms": round(sql_ms, 1),
            "python_ms": round(total - sql_ms, 1),
            "queries": len(queries),
            "slowest": sorted(queries, key=lambda q: -q["ms"])[:8],
        }

    result["profile"] = {
        "evaluate: tick": profile(tick),
        "evaluate: error gate": profile(ops["evaluate: error gate"]),
    }
    # where the tick's Python time goes (cProfile adds overhead: read the shares, not the ms)
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    tick()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(25)
    result["cprofile_tick"] = buf.getvalue().splitlines()

    # --- query plans -------------------------------------------------------------------
    def capture_sql(fn) -> list[tuple[str, tuple]]:
        got: list[tuple[str, tuple]] = []

        def wrapper(execute, sql, params, many, context):
            got.append((sql, tuple(params or ())))
            return execute(sql, params, many, context)

        with connection.execute_wrapper(wrapper):
            fn()
        return got

    def explain(sql: str, params: tuple) -> str:
        prefix = "EXPLAIN (ANALYZE, BUFFERS) " if vendor == "postgresql" else "EXPLAIN QUERY PLAN "
        with connection.cursor() as c:
            c.execute(prefix + sql, params)
            rows = c.fetchall()
        if vendor == "postgresql":
            return "\n".join(r[0] for r in rows)
        return "\n".join(f"{r[0]:>3} {r[1]:>3} {r[-1]}" for r in rows)

    r = rel()
    plans = {}
    for name, fn in (
        ("time_series", lambda: monitoring.time_series(r)),
        ("stage_counts", lambda: rollout.stage_counts(r)),
        ("deployment_counts", lambda: monitoring.deployment_counts(r)),
        ("top_failure", lambda: rollout._top_failure(r)),
    ):
        sql, params = capture_sql(fn)[-1]
        plans[name] = {"sql": sql, "plan": explain(sql, params)}
    # every SELECT of one tick, so the fleet scan and the timeout/notify queries are on record
    for i, (sql, params) in enumerate(capture_sql(tick)):
        if sql.lstrip().upper().startswith("SELECT") and " FOR UPDATE" not in sql.upper():
            plans[f"tick query {i + 1}"] = {"sql": sql, "plan": explain(sql, params)}
    result["plans"] = plans
    return result


# ---------------------------------------------------------------------------------------------
# parent


def run_child(backend: str, env: dict, args) -> dict:
    out = Path(tempfile.mkstemp(prefix=f"rollout-{backend}-", suffix=".json")[1])
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--role",
        "child",
        "--backend",
        backend,
        "--devices",
        str(args.devices),
        "--rounds",
        str(args.rounds),
        "--seed",
        str(args.seed),
        "--batch",
        str(args.batch),
        "--out",
        str(out),
    ]
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    data = json.loads(out.read_text())
    data["child_wall_s"] = round(time.perf_counter() - t, 1)
    out.unlink()
    return data


def clean_env(var_dir: Path) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "REDIS_URL", "WALLE_"))
    }
    env.update(
        {
            "WALLE_VAR_DIR": str(var_dir),
            "WALLE_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": "walle_web.settings",
            "WALLE_DEBUG": "1",  # the development secret key is fine for a benchmark
        }
    )
    return env


def parent_main(args) -> None:
    from tests.live import PG_URL

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    load_before = os.getloadavg()
    for backend in backends:
        tmp = Path(tempfile.mkdtemp(prefix=f"walle-rollout-{backend}-"))
        try:
            env = clean_env(tmp / "var")
            if backend == "sqlite":
                env["DATABASE_URL"] = f"sqlite:///{tmp / 'bench.sqlite3'}"
                print(f"== sqlite: {tmp / 'bench.sqlite3'}", flush=True)
                results[backend] = run_child(backend, env, args)
            elif backend == "postgres":
                try:
                    import psycopg

                    with psycopg.connect(PG_URL + "postgres", connect_timeout=3) as conn:
                        conn.execute("SELECT 1")
                except Exception as exc:
                    skipped[backend] = f"PostgreSQL at {PG_URL} does not answer: {exc}"
                    print(f"== postgres skipped: {skipped[backend]}", flush=True)
                    continue
                dbname = f"walle_bench_rollout_{uuid.uuid4().hex[:10]}"
                with psycopg.connect(PG_URL + "postgres", autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{dbname}"')
                    server_version = conn.execute("SHOW server_version").fetchone()[0]
                print(f"== postgres {server_version}: database {dbname}", flush=True)
                try:
                    env["DATABASE_URL"] = PG_URL + dbname
                    results[backend] = run_child(backend, env, args)
                    results[backend]["server_version"] = server_version
                finally:
                    with psycopg.connect(PG_URL + "postgres", autocommit=True) as conn:
                        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            else:
                raise SystemExit(f"unknown backend {backend!r} (sqlite, postgres)")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()

    ops = []
    for data in results.values():
        for name in data["ops"]:
            if name not in ops:
                ops.append(name)
    names = list(results)
    lines = []
    header = f"{'operation':44}" + "".join(f"{b + ' median':>16}{'p90':>10}{'n':>4}" for b in names)
    if len(names) == 2:
        header += f"{'pg/sqlite':>11}"
    lines.append(header)
    lines.append("-" * len(header))
    for op in ops:
        row = f"{op:44}"
        meds = []
        for b in names:
            o = results[b]["ops"].get(op)
            if o:
                row += f"{o['median_ms']:>13.1f} ms{o['p90_ms']:>7.1f} ms{o['rounds']:>4}"
                meds.append(o["median_ms"])
            else:
                row += f"{'-':>16}{'-':>10}{'':>4}"
                meds.append(None)
        if len(names) == 2 and all(meds):
            row += f"{meds[1] / meds[0]:>10.2f}x"
        lines.append(row)
    print()
    print(
        f"rollout bench: {args.devices} devices/deployments, rounds={args.rounds}, "
        f"load avg before {load_before[0]:.1f} after {load_after[0]:.1f}, {os.cpu_count()} vCPUs"
    )
    for b, data in results.items():
        print(
            f"{b}: {data['events']} events, {data['time_series_rows']} time-series rows; load "
            + ", ".join(f"{k} {v}" for k, v in data["load_s"].items())
            + f"; child wall {data['child_wall_s']} s"
        )
        for k in ("evaluate: tick", "evaluate: error gate"):
            p = data["profile"][k]
            print(
                f"  profile {k}: {p['total_ms']} ms total = {p['sql_ms']} ms in {p['queries']} queries"
                f" + {p['python_ms']} ms Python"
            )
    for b, why in skipped.items():
        print(f"{b}: SKIPPED — {why}")
    print("\n".join(lines))

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / (args.json or "rollout.json")
    out.write_text(
        json.dumps(
            {
                "bench": "rollout",
                "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                "command": " ".join(["python", "bench/rollout.py", *sys.argv[1:]]),
                "devices": args.devices,
                "rounds": args.rounds,
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "loadavg_before": load_before,
                "loadavg_after": load_after,
                "skipped": skipped,
                "table": lines,
                "backends": results,
            },
            indent=2,
            default=str,
        )
    )
    print(f"\nJSON: {out.relative_to(ROOT)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--json", default="", help="file name under bench/out/ (default rollout.json)")
    ap.add_argument("--role", default="parent", choices=("parent", "child"))
    ap.add_argument("--backend", default="")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if args.role == "child":
        child_main(args)
    else:
        parent_main(args)


if __name__ == "__main__":
    main()
