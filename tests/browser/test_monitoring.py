"""Monitoring a product team can trust, in a real browser against a live server, worker and
fleet: why a stage waits; new version vs control with a failing phone model, every figure
computed here from what the devices themselves ran; the optional gate stopping the release;
its alert delivered, signed, to a local webhook receiver configured through the console; charts
rebuilt from the server after a reload, with a time range; the fleet and the task's data pages.
"""

from __future__ import annotations

import json
import math
import re
import time
from statistics import NormalDist

import httpx
import pytest

from alerts.tests.receiver import Receiver, verify
from devices import targeting
from tests.browser.conftest import LIVE, BackgroundFleet, shot
from tests.live import poll, wait_for_release
from walle_web.tests.test_stats import fisher_by_enumeration

pytestmark = [pytest.mark.e2e, LIVE]

FLEET = 10
EVENTS = 6  # app events per device once stage 1 settled; each fires one task run
TRIGGER = {"steps": [{"kind": "custom", "event": "score"}]}
FAILING = ("Redmi", "Galaxy")  # v2 crashes on these phones
V1 = b"def run(ctx):\n    ctx.upload({'score': 1})\n    return 'ok'\n"
V2 = (
    "def run(ctx):\n"
    f"    if ctx.device['model'].startswith({FAILING!r}):\n"
    "        raise RuntimeError('score model crashes on this SoC')\n"
    "    ctx.upload({'score': 2})\n"
    "    return 'ok v2'\n"
).encode()


def upload(api: httpx.Client, task_id: int, source: bytes) -> dict:
    response = api.post(
        f"/api/v1/tasks/{task_id}/versions/",
        files=[("files", ("main.py", source))],
        data={"entry_point": "main.py", "config": json.dumps({"trigger": TRIGGER})},
    )
    assert response.status_code == 201, response.text
    return response.json()


def p_text(p: float) -> str:
    """How the page words a p-value: p < 0.001, p < 0.01, else p = 0.xx."""
    return "p < 0.001" if p < 0.001 else "p < 0.01" if p < 0.01 else f"p = {p:.2f}"


def test_new_vs_control_why_waiting_the_gate_and_its_alert(server, browser):
    t0 = time.monotonic()
    api = server.api()
    base, app = server.url, server.app
    fleet = BackgroundFleet(base, server.enroll_key, FLEET, streams=True)
    fleet.start()
    models = {d.identity.device_id: d.attrs["model"] for d in fleet.devices}
    failing = {uid for uid, model in models.items() if model.startswith(FAILING)}
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    js_errors: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    with Receiver() as receiver:
        try:
            page.goto(base + "/login/")
            page.fill("#id_username", "admin")
            page.fill("#id_password", "walle-admin")
            page.click("button[type=submit]")
            page.wait_for_url(re.compile(rf"/apps/{app}/$"))

            # A webhook for gate pauses, configured in the console; its secret shows once.
            page.goto(f"{base}/apps/{app}/alerts/")
            page.fill("#c-name", "ops hook")
            page.select_option("#c-kind", "webhook")
            page.fill("#c-url", receiver.url)
            page.check('input[name="events"][value="release.paused_by_gate"]')
            page.click("#channel-form button[type=submit]")
            secret = page.locator("#new-secret input").input_value()
            assert secret.startswith("whsec_")

            # v1 everywhere (each device runs it once at install, before v2's window).
            task = api.post("/api/v1/tasks/", json={"app": app, "name": "scorer"}).json()
            v1 = upload(api, task["id"], V1)
            r1 = api.post("/api/v1/releases/", json={"version": v1["id"]}).json()["id"]
            api.post(f"/api/v1/releases/{r1}/start/")
            wait_for_release(api, r1, lambda body: body["state"] == "completed", "to complete")

            # v2 to half the fleet, a salt chosen so that half holds crashing phones, phones
            # that work, and leaves a control group large enough to compare with.
            v2 = upload(api, task["id"], V2)

            def stage1(salt: str) -> set[str]:
                return {uid for uid in models if targeting.bucket(salt, uid) < 5000}

            salt = next(
                f"m{i}"
                for i in range(100_000)
                if 4 <= len(stage1(f"m{i}")) <= 6
                and len(stage1(f"m{i}") & failing) >= 2
                and len(stage1(f"m{i}") - failing) >= 2
            )
            on_v2 = stage1(salt)
            control = set(models) - on_v2
            crashing = on_v2 & failing
            created = api.post(
                "/api/v1/releases/",
                json={
                    "version": v2["id"],
                    "salt": salt,
                    "stages": [
                        {
                            "basis_points": 5000,
                            "auto_advance": False,
                            "error_gate": 1.0,
                            "stop_if_worse": True,
                        },
                        {"basis_points": 10_000},
                    ],
                },
            ).json()
            r2 = created["id"]
            api.post(f"/api/v1/releases/{r2}/start/")
            wait_for_release(
                api,
                r2,
                lambda body: body["counts"]["succeeded"] + body["counts"]["failed"] == len(on_v2),
                f"to finish stage 1 ({len(on_v2)} devices)",
            )

            # Why it waits, in the numbers of the stage (computed here, not read back).
            page.goto(f"{base}/apps/{app}/releases/{r2}/")
            page.wait_for_selector("#live-status.on")
            ok, total = len(on_v2 - failing), len(on_v2)
            more = math.ceil(0.95 * total) - ok
            expected_why = (
                f"Stage 1 waits for: {ok} of {total} succeeded ({ok / total:.0%}), success gate "
                f"95%: {more} more must succeed; {len(crashing)} failed or timed out; the gate "
                "cannot be met even if every unfinished device succeeds: advance by hand, or "
                "roll back; auto-advance is off: an operator advances this stage"
            )
            page.wait_for_function(
                "t => document.getElementById('release-why').textContent === t",
                arg=expected_why,
            )
            assert "error gate 100%" in page.locator('[data-condition="error_gate"]').inner_text()
            shot(page, "dashboard-why")

            # The app is used: every device sees EVENTS events, each one runs the task. The
            # crashing phones fail every run of v2; the control group runs v1 without errors.
            fleet.emit("custom", "home", "score", EVENTS)
            poll(
                lambda: all(
                    fleet.runs[(uid, 2 if uid in on_v2 else 1)] >= EVENTS + 1 for uid in models
                ),
                what="every device to run its events",
            )
            poll(lambda: fleet.pending() == 0, what="the server to acknowledge every run")
            with fleet.lock:
                new_runs = sum(fleet.runs[(uid, 2)] for uid in models)
                new_errors = sum(fleet.errors[(uid, 2)] for uid in models)
                # Every device's first v1 run was its install, before v2's window opened.
                control_runs = sum(fleet.runs[(uid, 1)] for uid in models) - FLEET
                control_errors = sum(fleet.errors[(uid, 1)] for uid in models)
            assert new_errors == len(crashing) * (EVENTS + 1) and control_errors == 0

            # New vs control on the page: the same figures, sample sizes and a verdict.
            page.select_option("#range", "1h")  # (re)loads the comparison now
            cells = {
                "new": (str(len(on_v2)), str(new_runs), str(new_errors)),
                "control": (str(len(control)), str(control_runs), str(control_errors)),
            }
            for group, (devices, runs, errors) in cells.items():
                page.wait_for_function(
                    "([g, d, r, e]) => { const row = document.querySelector("
                    "`#metrics-table tr[data-group=${g}]`); return row && "
                    "row.querySelector('[data-field=devices]').textContent === d && "
                    "row.querySelector('[data-field=runs]').textContent === r && "
                    "row.querySelector('[data-field=errors]').textContent === e; }",
                    arg=[group, devices, runs, errors],
                )
            rate = page.locator('#metrics-table tr[data-group="new"] [data-field="error_rate"]')
            assert rate.inner_text() == f"{100 * new_errors / new_runs:.2f}%"
            labels = page.locator("#metrics-table tbody td:first-child").all_inner_texts()
            assert labels == ["v2 (new)", "v1 (control)"]
            pooled = new_errors / (new_runs + control_runs)
            if min(new_runs, control_runs) * pooled >= 5:
                z = (new_errors / new_runs) / math.sqrt(
                    pooled * (1 - pooled) * (1 / new_runs + 1 / control_runs)
                )
                p = 2 * (1 - NormalDist().cdf(z))
            else:
                p = fisher_by_enumeration(new_errors, new_runs, 0, control_runs)
            verdict = page.locator('[data-verdict="error_rate"]').inner_text()
            assert f"worse, {p_text(p)}" in verdict, (verdict, p)

            # The optional gate stops the release; its reason says why.
            page.wait_for_selector("#release-state .state-paused", timeout=30_000)
            reason = page.locator("#release-reason").inner_text()
            assert "errs significantly more than control" in reason, reason
            shot(page, "dashboard-compare")

            # Its alert reaches the webhook receiver, signed with the channel's secret.
            (request,) = receiver.wait_for(1)
            assert verify(secret, request["headers"], request["body"])
            body = json.loads(request["body"])
            assert body["event"] == "release.paused_by_gate" and body["release"]["id"] == r2
            assert "errs significantly more than control" in body["text"]
            page.goto(f"{base}/apps/{app}/alerts/")
            row = page.locator(f'#alerts tr[data-alert="{body["id"]}"]')
            assert row.locator('[data-delivery="delivered"]').count() == 1
            shot(page, "alerts")
            audit = api.get(f"/api/v1/apps/{app}/audit/").json()["results"]
            assert any(
                e["action"] == "alert.release.paused_by_gate" and e["target_id"] == str(body["id"])
                for e in audit
            ), audit

            # After a reload the charts are rebuilt from the server, from the first sample,
            # and end where the counts are; the range picker moves the window.
            page.goto(f"{base}/apps/{app}/releases/{r2}/")
            dash = page.locator("#dashboard")
            page.wait_for_function(
                "() => Number(document.getElementById('dashboard').dataset.chartPoints) > 1"
            )
            started = api.get(f"/api/v1/releases/{r2}/").json()
            started_at = time.mktime(time.strptime(started["started_at"][:19], "%Y-%m-%dT%H:%M:%S"))
            started_at -= time.timezone  # the API answers UTC
            assert abs(float(dash.get_attribute("data-chart-first")) - started_at) < 1.5
            last = json.loads(dash.get_attribute("data-chart-last"))
            counts = started["counts"]
            assert last["succeeded"] == counts["succeeded"]
            assert last["failed"] == counts["failed"] + counts["timed_out"]
            assert last["pending"] == counts["pending"]
            page.select_option("#range", "15m")
            page.wait_for_function(
                "t => Number(document.getElementById('dashboard').dataset.chartFirst) < t",
                arg=started_at - 800,
            )

            # The fleet runs what the devices reported: v2 on stage 1, failing on the
            # crashing phones.
            page.goto(f"{base}/apps/{app}/fleet/?task=scorer&version=2")
            rows = set(page.locator("#devices tbody tr td:first-child code").all_inner_texts())
            assert rows == on_v2
            failing_cells = page.locator('#devices [data-running="scorer"][data-state="failed"]')
            assert failing_cells.count() == len(crashing)

            # The task's run health and results, by version, as the devices ran them.
            page.goto(f"{base}/apps/{app}/tasks/{task['id']}/health/")
            v2_row = page.locator('#health-versions tr[data-version="2"]')
            v2_row.locator('[data-field="runs"]').wait_for()
            assert v2_row.locator('[data-field="runs"]').inner_text() == str(new_runs)
            assert v2_row.locator('[data-field="errors"]').inner_text() == str(new_errors)
            v1_row = page.locator('#health-versions tr[data-version="1"]')
            assert v1_row.locator('[data-field="runs"]').inner_text() == str(control_runs + FLEET)
            shot(page, "task-health")
            page.goto(f"{base}/apps/{app}/tasks/{task['id']}/results/")
            uploads = (control_runs + FLEET) + (new_runs - new_errors)  # every good run uploads
            page.wait_for_function(
                "n => document.getElementById('rate-summary').dataset.total === String(n)",
                arg=uploads,
            )
            shot(page, "task-results")
            one = sorted(on_v2 - failing)[0]
            page.goto(f"{base}/apps/{app}/tasks/{task['id']}/results/?version=2&device={one}")
            assert page.locator("#results tbody tr").count() == fleet.runs[(one, 2)]
            assert not js_errors, js_errors
        except BaseException:
            shot(page, "failure-monitoring")
            raise
        finally:
            context.close()
            fleet.close()
            print(f"monitoring browser test took {time.monotonic() - t0:.1f} s")
