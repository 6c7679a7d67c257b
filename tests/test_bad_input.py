"""Bad input against a real server, on SQLite and on PostgreSQL: every probe gets a clear 4xx
(or an `error` frame), never a 500 or a dropped socket, and the same answer on both databases.

Then schemathesis fuzzes the REST API against its own live OpenAPI schema (bounded examples,
fixed seed): no server error, no response outside the schema, no undocumented status code.
The same two servers serve both, so each database pays one start-up.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
import zipfile

import httpx
import pytest
import websockets

from walle_device import protocol

TASK = b"def run(ctx):\n    return 1\n"
# Throttles stay on (they answer 429, which is documented), but high enough for a fuzz run.
FUZZ_ENV = {
    "WALLE_THROTTLE_USER": "1000000/min",
    "WALLE_THROTTLE_ANON": "1000000/min",
    "WALLE_THROTTLE_AUTH_FAILURES": "1000000/min",
    "WALLE_THROTTLE_DEVICE": "1000000/min",
    "WALLE_MAX_FILE_BYTES": str(4 * 1024 * 1024),
    "WALLE_MAX_VERSION_BYTES": str(8 * 1024 * 1024),
}


# One server per database (SQLite, then PostgreSQL), shared by every test of the module.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.live(processes=1, extra_env=FUZZ_ENV),
]


@pytest.fixture(scope="module")
def live(module_server):
    """The module's server with a task version, an enrolled device and a draft release."""
    server = module_server
    api = server.api()
    task = api.post("/api/v1/tasks/", json={"app": server.app, "name": "page-stats"})
    assert task.status_code == 201, task.text
    version = api.post(
        f"/api/v1/tasks/{task.json()['id']}/versions/",
        files=[("files", ("main.py", TASK))],
    )
    assert version.status_code == 201, version.text
    enrolled = httpx.post(
        server.url + "/api/v1/devices/enroll/",
        json={"enrollment_key": server.enroll_key, "attrs": {"model": "Pixel 8"}},
    )
    assert enrolled.status_code == 201, enrolled.text
    release = api.post("/api/v1/releases/", json={"version": version.json()["id"]})
    assert release.status_code == 201, release.text
    server.version_id = version.json()["id"]
    server.device_token = enrolled.json()["token"]
    server.release_id = release.json()["id"]
    server.backend = "postgres" if server.dbname else "sqlite"
    return server


def _json(api: httpx.Client, method: str, url: str, body: str) -> httpx.Response:
    return api.request(method, url, content=body, headers={"Content-Type": "application/json"})


def assert_refused(response: httpx.Response, status: int = 400) -> None:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    assert response.json(), "a refusal says why"


# --- one operator cannot stop every tenant -------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"delivery": {"timeout_s": 1e11}},
        {"delivery": {"ramp": 1e6}},
        {"delivery": {"notify_rate": 1e300}},
        {"delivery": {"max_in_flight": 2**62}},
        {"stages": [{"basis_points": 10000, "soak_s": 10**12}]},
        {"stages": [{"basis_points": 10000, "min_finished": 2**40}]},
        {"stages": [{"basis_points": 10000, "error_gate": 2}]},
        {"stages": [{"basis_points": b} for b in range(1, 30)] + [{"basis_points": 10000}]},
        {"target": {"groups": ["a"]}},
        {"target": {"groups": [True]}},
        {"target": {"groups": [2**63]}},
        {"target": {"models": [7]}},
        {"target": {"regions": ["x" * 5000]}},
    ],
)
def test_unbounded_policies_are_refused(live, body):
    response = live.api().post("/api/v1/releases/", json={"version": live.version_id, **body})
    assert_refused(response)


# --- strict JSON: what validates is what stores, on both databases --------------------------


@pytest.mark.parametrize(
    "raw",
    [
        '{"version": %(v)d, "delivery": {"timeout_s": NaN}}',
        '{"version": %(v)d, "delivery": {"timeout_s": Infinity}}',
        '{"version": %(v)d, "delivery": {"timeout_s": 1e999}}',
        '{"version": %(v)d, "name": "a\\u0000b"}',
        '{"version": %(v)d, "name": "\\ud800"}',
        '{"version": 99999999999999999999999}',
        '{"version": %(v)d, "target": ' + "[" * 200 + "]" * 200 + "}",
    ],
)
def test_unstorable_json_is_refused(live, raw):
    assert_refused(_json(live.api(), "POST", "/api/v1/releases/", raw % {"v": live.version_id}))


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/api/v1/releases/?limit=99999999999999999999", 200),  # clamped to the page limit
        ("/api/v1/releases/?offset=99999999999999999999", 400),
        ("/api/v1/releases/?limit=%C2%B2", 400),
        ("/api/v1/versions/?task=abc", 200),
        ("/api/v1/versions/?task=%00", 400),
        ("/api/v1/releases/?task=page-stats&state=bogus", 400),
        ("/api/v1/deployments/?release=abc", 400),
        ("/api/v1/deployments/?release=99999999999999999999", 400),
        ("/api/v1/releases/{release}/deployments/?stage=%C2%B2", 400),
        ("/api/v1/releases/{release}/deployments/?stage=1.5", 400),
        ("/api/v1/results/?version=4294967296", 400),
        ("/api/v1/devices/%00/", 400),
        ("/api/v1/devices/?online=maybe", 400),
        ("/api/v1/results/export/?app=shop-android&task=a%22%0D%0AX-Evil:%201", 200),
    ],
)
def test_query_parameters_never_reach_the_database_unchecked(live, url, status):
    response = live.api().get(url.replace("{release}", str(live.release_id)))
    assert response.status_code == status, (url, response.status_code, response.text[:300])
    if status == 400:
        assert_refused(response)
    disposition = response.headers.get("content-disposition", "")
    assert "\n" not in disposition and "X-Evil" not in response.headers


def test_task_names_are_accepted_wherever_a_task_is_named(live):
    api = live.api()
    by_name = api.get("/api/v1/versions/?task=page-stats").json()["results"]
    assert [v["id"] for v in by_name] == [live.version_id]
    task_id = api.get("/api/v1/tasks/").json()["results"][0]["id"]
    assert api.get(f"/api/v1/versions/?task={task_id}").json()["results"] == by_name
    assert api.get("/api/v1/versions/?task=abc").json()["results"] == []
    assert api.get("/api/v1/releases/?task=page-stats").status_code == 200


# --- column lengths and integer ranges agree with validation, on both databases -----------


def test_device_attributes_as_long_as_validation_allows_are_stored(live):
    enroll = live.url + "/api/v1/devices/enroll/"
    longest = {"model": "m" * protocol.ATTR_MAX_LEN, "region": "r" * protocol.ATTR_MAX_LEN}
    ok = httpx.post(enroll, json={"enrollment_key": live.enroll_key, "attrs": longest})
    assert ok.status_code == 201, ok.text
    device = live.api().get(f"/api/v1/devices/{ok.json()['device_id']}/").json()
    assert device["model"] == longest["model"] and device["region"] == longest["region"]
    too_long = {"model": "m" * (protocol.ATTR_MAX_LEN + 1)}
    assert_refused(httpx.post(enroll, json={"enrollment_key": live.enroll_key, "attrs": too_long}))
    assert_refused(
        httpx.post(enroll, json={"enrollment_key": live.enroll_key, "attrs": {"tags": [1]}})
    )


@pytest.mark.parametrize(
    "item",
    [
        {"key": "k1", "task": "t", "version": 2**31, "payload": {}},
        {"key": "k2", "task": "t", "version": -1, "payload": {}},
        {"key": "", "task": "t", "version": 1, "payload": {}},
        {"key": "k" * 129, "task": "t", "version": 1, "payload": {}},
    ],
)
def test_tunnel_items_out_of_range_are_refused(live, item):
    response = httpx.post(
        live.url + "/api/v1/tunnel/",
        json={"items": [item]},
        headers={"Authorization": f"Bearer {live.device_token}"},
    )
    assert_refused(response)


@pytest.mark.parametrize(
    "payload", ['{"x": NaN}', '{"x": "\\u0000"}', '{"x": 18446744073709551616}']
)
def test_tunnel_payloads_no_database_stores_are_refused(live, payload):
    body = '{"items": [{"key": "p", "task": "t", "version": 1, "payload": ' + payload + "}]}"
    response = httpx.post(
        live.url + "/api/v1/tunnel/",
        content=body,
        headers={
            "Authorization": f"Bearer {live.device_token}",
            "Content-Type": "application/json",
        },
    )
    assert_refused(response)


# --- uploads: Walle's JSON error for every refusal -----------------------------------------


def _zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return out.getvalue()


def _corrupt(data: bytes) -> bytes:
    at = data.index(b"def run")
    return data[:at] + b"X" + data[at + 1 :]  # CRC no longer matches


@pytest.mark.parametrize(
    "bundle",
    [
        b"not a zip at all",
        _zip({"main.py": TASK})[:40],
        _corrupt(_zip({"main.py": TASK})),
        _zip({"../evil.py": TASK}),
        _zip({"main.py": TASK, "walle.json": b'{"config": {"params": NaN}}'}),
        _zip({"main.py": TASK, "walle.json": b'{"entry_point": 5}'}),
        _zip({"main.py": TASK, "walle.json": b'{"config": {"models": [[1]]}}'}),
        _zip({"main.py": b"def run(ctx):\n    return (" * 300 + b")" * 300}),
        _zip({"main.py": b"def run(ctx): return 1\x00"}),
    ],
)
def test_malformed_bundles_are_refused_with_a_reason(live, bundle):
    task_id = live.api().get("/api/v1/tasks/").json()["results"][0]["id"]
    response = live.api().post(
        f"/api/v1/tasks/{task_id}/versions/", files=[("bundle", ("b.zip", bundle))]
    )
    assert_refused(response)


def test_too_many_or_too_large_files_get_a_json_refusal(live):
    api = live.api()
    task_id = api.get("/api/v1/tasks/").json()["results"][0]["id"]
    url = f"/api/v1/tasks/{task_id}/versions/"
    many = [("files", (f"f{i}.py", b"x = 1\n")) for i in range(202)]
    assert_refused(api.post(url, files=many))
    big = 4 * 1024 * 1024 + 1
    assert_refused(api.post(url, files=[("files", ("main.py", b"#" * big))]), 413)


def test_a_foreign_or_missing_version_reads_the_same(live):
    api = live.api()
    missing = api.post("/api/v1/releases/", json={"version": 10**9})
    assert_refused(missing)
    assert "maps" not in missing.text and "shop" not in missing.text


def test_a_slow_upload_check_does_not_stall_other_requests(live):
    """The check runs in its own process: /healthz answers while it works."""
    if live.backend != "sqlite":
        pytest.skip("one database shows it")
    import threading

    task_id = live.api().get("/api/v1/tasks/").json()["results"][0]["id"]
    slow = TASK + b"x = 1\n" * 600_000  # seconds of CPU and ~1 GB in the compiler
    done = threading.Event()
    result: dict = {}

    def upload() -> None:
        result["response"] = live.api().post(
            f"/api/v1/tasks/{task_id}/versions/", files=[("files", ("main.py", slow))]
        )
        done.set()

    thread = threading.Thread(target=upload)
    thread.start()
    answered_during = 0
    while not done.is_set():
        if httpx.get(live.url + "/healthz", timeout=30).status_code == 200 and not done.is_set():
            answered_during += 1
    thread.join()
    assert result["response"].status_code == 201, result["response"].text[:300]
    assert answered_during >= 1


# --- device frames through daphne: an `error` frame, never 1011 -----------------------------


def test_device_frames_no_database_can_store_get_an_error_frame(live):
    url = live.url.replace("http://", "ws://") + "/ws/device/"
    frames = [
        '{"type": "run_stats", "v": 1, "id": "s1", "task": "t", "version": 1, "runs": 1, "errors": 0, "latency_ms_p50": 1e999}',
        '{"type": "run_stats", "v": 1, "id": "s2", "task": "t", "version": 2147483648, "runs": 1, "errors": 0}',
        '{"type": "report", "v": 1, "id": "r1", "deployment": 99999999999999999999, "state": "succeeded"}',
        '{"type": "upload", "v": 1, "id": "u1", "items": [{"key": "k", "task": "t", "version": 1, "payload": NaN}]}',
        '{"type": "upload", "v": 1, "id": "u2", "items": [{"key": "k", "task": "t", "version": 1, "payload": "\\u0000"}]}',
        '{"type": "hello", "v": 1, "attrs": {"model": "' + "m" * 81 + '"}, "current": {}}',
        "[" * 5000 + "]" * 5000,
        json.dumps(protocol.message("ping", t=1.0)) + " " * (300 * 1024),
        '{"type": "ping", "v": 1, "t": "' + "\u00e9" * 140_000 + '"}',  # 140k chars, 280 KB
    ]

    async def go():
        async with websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {live.device_token}"}
        ) as ws:
            for frame in frames:
                await ws.send(frame)
                answer = protocol.decode(await asyncio.wait_for(ws.recv(), 20), max_bytes=2**20)
                assert answer["type"] == "error", (frame[:80], answer)
            await ws.send(json.dumps(protocol.message("ping", t=2.0)))
            assert protocol.decode(await asyncio.wait_for(ws.recv(), 20))["type"] == "pong"
            # The longest attributes validation allows are stored, on both databases.
            longest = {"model": "m" * protocol.ATTR_MAX_LEN, "os_version": "9" * 80}
            await ws.send(json.dumps(protocol.message("hello", attrs=longest, current={})))
            assert protocol.decode(await asyncio.wait_for(ws.recv(), 20))["type"] == "desired"

    asyncio.run(go())
    # The release monitoring of the app still answers (a stored infinity broke it before).
    api = live.api()
    created = api.post("/api/v1/releases/", json={"version": live.version_id})
    assert created.status_code == 201, created.text
    assert api.get(f"/api/v1/releases/{created.json()['id']}/monitoring/").status_code == 200


# --- schemathesis against the live schema ---------------------------------------------------

SUMMARY = re.compile(r"^.*(passed|failed|error).*$", re.MULTILINE)


def test_schemathesis_finds_no_server_error_or_schema_violation(live, tmp_path):
    """Bounded examples and a fixed seed, so a run is reproducible; ~1 min per database."""
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            live.url + "/api/schema/",
            "--header",
            f"Authorization: Token {live.token}",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance,response_headers_conformance",
            "--max-examples",
            "8",
            "--seed",
            "20261204",
            "--workers",
            "2",
            "--phases",
            "examples,coverage,fuzzing",
            "--no-shrink",
            "--suppress-health-check",
            "all",
            "--request-timeout",
            "60",
            "--report",
            "json",
            "--report-json-path",
            str(report),
            "--output-truncate",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,  # its cache of past failures stays with this run
    )
    tail = "\n".join(proc.stdout.splitlines()[-40:])
    print(f"schemathesis on {live.backend}:\n{tail}")
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
