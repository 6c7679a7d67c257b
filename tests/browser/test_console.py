"""The console in a real browser (Debian's chromium, headless) against a live daphne with a
simulated fleet: log in, create a task, upload versions through the page, release through the
wizard in two stages, watch the dashboard update live, pause, resume, advance, roll back.

Screenshots of each main page go to test-artifacts/screenshots/ (the key ones are copied to
docs/screenshots/ by hand)."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile

import httpx
import pytest

from tests.browser.conftest import LIVE, SHOTS, BackgroundFleet, shot
from tests.live import poll, wait_for_counts

pytestmark = [pytest.mark.e2e, LIVE]

FLEET = 10
TASK_V1 = (
    b"def run(ctx):\n    ctx.upload({'model': ctx.device['model'], 'v': 1})\n    return 'ok'\n"
)
# Version 2 breaks on one phone model, so the dashboard has a failure reason to show.
TASK_V2 = (
    b"def run(ctx):\n"
    b"    if ctx.device['model'].startswith('Moto'):\n"
    b"        raise RuntimeError('kernel not supported on this GPU')\n"
    b"    ctx.upload({'model': ctx.device['model'], 'v': 2})\n"
    b"    return 'ok v2'\n"
)


def require_endpoint(api: httpx.Client, path: str) -> None:
    """Fail, saying which, when a POST-only action the journey needs is not served: it
    answers GET with 405 when it exists, 404 when it does not."""
    status = api.get(path).status_code
    assert status != 404, (
        f"GET {path} answered 404: the release action API the console's buttons call is "
        "missing, so the rest of the journey cannot run"
    )


def latest_version(api: httpx.Client, task_id: int) -> dict:
    listed = api.get(f"/api/v1/versions/?task={task_id}")
    assert listed.status_code == 200, listed.text[:300]
    return max(listed.json()["results"], key=lambda v: v["number"])


def count_on_page(page, state: str) -> int:
    return int(page.locator(f'[data-count="{state}"]').inner_text())


def wait_finished(api: httpx.Client, release_id: int, n: int, timeout: float = 30) -> dict:
    """Until n deployments finished (succeeded, failed or timed out)."""
    return poll(
        lambda: api.get(f"/api/v1/releases/{release_id}/").json()["counts"],
        until=lambda c: c["succeeded"] + c["failed"] + c["timed_out"] == n,
        what=f"{n} finished deployments of release {release_id}",
        timeout=timeout,
    )


FINISHED_ON_PAGE = (
    "n => ['succeeded', 'failed', 'timed_out'].reduce((sum, s) =>"
    " sum + Number(document.querySelector(`[data-count=${s}]`).textContent), 0) === n"
)


def upload_through_page(
    page, base: str, app: str, task_id: int, source: bytes, notes: str, as_zip: bool = False
):
    """Fill the upload page: two loose files, or the same files as one .zip bundle."""
    page.goto(f"{base}/apps/{app}/tasks/{task_id}/upload/")
    files = {"main.py": source, "labels.json": b'{"a": 1}\n'}
    if as_zip:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as bundle:
            for name, data in files.items():
                bundle.writestr(name, data)
        picked = [{"name": "task.zip", "mimeType": "application/zip", "buffer": buffer.getvalue()}]
    else:
        picked = [
            {"name": name, "mimeType": "application/octet-stream", "buffer": data}
            for name, data in files.items()
        ]
    page.set_input_files("#files-input", files=picked)
    page.fill("#config", json.dumps({"params": {"k": len(notes)}}))
    page.fill("#notes", notes)
    page.wait_for_selector(f"#filelist li >> text={picked[0]['name']}")
    return page


def expected_stage_warnings(
    cumulative: list[int], percents: list[int], *, min_finished: int, success_gate: float
) -> list[tuple[str, str]]:
    """(stage name, fragment) of each warning the wizard must show for these preview counts."""
    out = []
    for i, (n, percent) in enumerate(zip(cumulative, percents, strict=True)):
        own = n - (cumulative[i - 1] if i else 0)
        name = f"Stage {i + 1} ({percent}%)"
        if own == 0 and cumulative[-1] > 0:
            out.append((name, "reaches no device now"))
            continue
        if 0 < own < min_finished:
            out.append(
                (
                    name,
                    f"holds {own} device{'s' * (own != 1)} now, fewer than its min finished ({min_finished})",
                )
            )
        if own > 0 and int(own * (1 - success_gate) + 1e-9) == 0:
            out.append((name, "any one failure or offline device keeps it from advancing"))
    return out


def expect_device_rows(page, uids: set[str]) -> None:
    """The dashboard's device table lists exactly these devices, and its count says so."""
    page.wait_for_function(
        "want => { const rows = [...document.querySelectorAll('#deployments tbody tr code')]"
        ".map(c => c.textContent).sort(); return JSON.stringify(rows) === JSON.stringify(want); }",
        arg=sorted(uids),
    )
    if uids:
        count = page.locator("#dep-count").inner_text()
        assert count.startswith(f"{len(uids)} device"), count
    else:
        page.wait_for_selector("#deployments tbody td:has-text('No device matches')")


def test_a_product_team_releases_and_rolls_back_through_the_console(server, browser):
    t0 = time.monotonic()
    api = server.api()
    base, app = server.url, server.app
    fleet = BackgroundFleet(base, server.enroll_key, FLEET)
    fleet.start()
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    # Script exceptions fail the test; console errors (e.g. the 400 of the refused upload,
    # which the page shows inline on purpose) are printed for diagnosis only.
    js_errors: list[str] = []
    console_errors: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    try:
        # Log in with the bootstrap admin; land on the app overview.
        page.goto(base + "/")
        assert "/login/" in page.url
        shot(page, "login")
        page.fill("#id_username", "admin")
        page.fill("#id_password", "walle-admin")
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(rf"/apps/{app}/$"))
        assert page.locator(".tile .big").first.inner_text() == str(FLEET)

        # Create a task; the page sends us to its upload page.
        page.goto(f"{base}/apps/{app}/tasks/")
        page.fill("#t-name", "item-features")
        page.fill("#t-scene", "home-feed")
        page.click("text=Create task")
        page.wait_for_url(re.compile(r"/upload/$"))
        task_id = int(re.search(r"/tasks/(\d+)/upload/", page.url).group(1))

        # A broken config is refused inline, then version 1 goes up.
        upload_through_page(page, base, app, task_id, TASK_V1, "first")
        page.fill("#config", '{"params": ')
        page.click("#upload-submit")
        page.wait_for_selector('.field-error[data-field="config"]:not([hidden])')
        shot(page, "upload-error")
        page.fill("#config", '{"params": {"k": 1}}')
        page.click("#upload-submit")
        page.wait_for_url(re.compile(r"\?v=1$"))
        v1 = latest_version(api, task_id)

        # v1 goes to every device through the API (the "known good" version to roll back to).
        r1 = api.post("/api/v1/releases/", json={"version": v1["id"], "name": "v1 baseline"})
        assert r1.status_code == 201, r1.text
        assert api.post(f"/api/v1/releases/{r1.json()['id']}/start/").status_code == 200
        wait_for_counts(api, r1.json()["id"], {"succeeded": FLEET}, timeout=30)

        # Version 2 through the page; the task page diffs it against v1.
        upload_through_page(page, base, app, task_id, TASK_V2, "second version", as_zip=True)
        shot(page, "upload")
        page.click("#upload-submit")
        page.wait_for_url(re.compile(r"\?v=2$"))
        page.goto(f"{base}/apps/{app}/tasks/{task_id}/?v=2&a=1&b=2#diff")
        assert page.locator("pre.diff .add", has_text="'v': 2").count() == 1
        shot(page, "task-detail")
        v2 = latest_version(api, task_id)
        assert v2["number"] == 2

        # The wizard: version, target (live count), two stages, delivery, confirmation.
        page.goto(f"{base}/apps/{app}/releases/new/?version={v2['id']}")
        page.click("#w-next")
        page.wait_for_selector(f"[data-target-count]:has-text('{FLEET} devices')")
        page.fill("#w-models", "Nokia*")
        page.wait_for_selector("[data-target-count]:has-text('0 devices')")
        page.fill("#w-models", "")
        page.wait_for_selector(f"[data-target-count]:has-text('{FLEET} devices')")
        shot(page, "wizard-target")
        page.click("#w-next")
        page.click("button[data-preset='5000,10000']")
        # Stage 1 waits for an operator: no auto-advance; one broken model must not trip the gate.
        page.locator("#stages tbody tr").first.locator('[data-field="auto"]').uncheck()
        for error_gate in page.locator('#stages [data-field="error"]').all():
            error_gate.fill("50")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#stages [data-preview]')].at(-1).textContent"
            f" === '{FLEET}'"
        )
        # The wizard warns about stages whose gates cannot work with the devices they hold
        # now: computed here from the preview of the same salt, not read from the page.
        salt = json.loads(page.locator("#wizard-data").text_content())["salt"]
        preview = api.post(
            "/api/v1/releases/preview/",
            json={
                "version": v2["id"],
                "stages": [{"basis_points": 5000}, {"basis_points": 10000}],
                "salt": salt,
            },
        ).json()["stages"]
        expected = expected_stage_warnings(preview, [50, 100], min_finished=5, success_gate=0.95)
        if expected:
            page.wait_for_selector("#stage-warnings:not([hidden])")
        warnings = page.locator("#stage-warnings div").all_inner_texts()
        assert len(warnings) == len(expected), (warnings, expected)
        for line, (name, fragment) in zip(warnings, expected, strict=True):
            assert line.startswith(name) and fragment in line, (line, name, fragment)
        shot(page, "wizard-stages")
        page.click("#w-next")
        page.fill("#w-timeout", "120")
        page.click("#w-next")
        page.check("#w-confirm")
        # The review shows every stage's gates, as they will be sent.
        gates = page.locator("#review-stages tbody tr").all_inner_texts()
        assert len(gates) == 2
        assert (
            "≥ 95% succeeded" in gates[0] and "stop above 50% failed, after 5 finished" in gates[0]
        )
        assert "by an operator" in gates[0] and "automatic" in gates[1]
        shot(page, "wizard-review")
        page.click("#w-submit")
        page.wait_for_url(re.compile(rf"/apps/{app}/releases/\d+/$"))
        release_id = int(re.search(r"/releases/(\d+)/$", page.url).group(1))

        # The dashboard: live socket, stage 1 admitted; nothing reloads from here on.
        page.wait_for_selector("#live-status.on")
        page.evaluate("window.__sameDocument = true")
        stage1 = api.get(f"/api/v1/releases/{release_id}/").json()["counts"]["total"]
        wait_finished(api, release_id, stage1)
        page.wait_for_function(FINISHED_ON_PAGE, arg=stage1)
        shot(page, "dashboard-stage1")

        def act(action: str, reason: str = "") -> None:
            page.click(f'#actions [data-action="{action}"]')
            if reason:
                page.fill("#confirm-reason", reason)
            page.click("#confirm-ok")

        # The rest of the journey needs the action API: its absence is a failure, not a skip.
        for action in ("pause", "resume", "advance", "rollback"):
            require_endpoint(api, f"/api/v1/releases/{release_id}/{action}/")
        act("pause", "checking the canaries")
        page.wait_for_selector("#release-state .state-paused")
        page.wait_for_selector("#release-reason:has-text('checking the canaries')")
        shot(page, "dashboard-paused")
        act("resume")
        page.wait_for_selector("#release-state .state-running")

        # Advance: the second stage's devices appear on the page as they report, live.
        act("advance")
        page.wait_for_function(FINISHED_ON_PAGE, arg=FLEET, timeout=30_000)
        assert page.evaluate("window.__sameDocument") is True  # updated without a reload
        assert count_on_page(page, "total") == FLEET
        page.wait_for_selector(f"#deployments tbody tr >> nth={FLEET - 1}")  # table refreshed
        page.select_option("#dep-stage", "2")  # the per-device table, second stage only
        page.wait_for_function(
            "() => [...document.querySelectorAll('#deployments tbody tr td:nth-child(2)')]"
            ".every(td => td.textContent === '2')"
        )
        page.select_option("#dep-stage", "")
        page.wait_for_selector(f"#deployments tbody tr >> nth={FLEET - 1}")
        if count_on_page(page, "failed"):
            page.wait_for_selector("#failures code:has-text('run_failed')")
        # The state filter lists the deployments in that state (it answered 404 before):
        # the expected devices come from the API's unfiltered list.
        listed = api.get(f"/api/v1/releases/{release_id}/deployments/?limit=100").json()["results"]
        by_state: dict[str, set[str]] = {}
        for d in listed:
            by_state.setdefault(d["state"], set()).add(d["device"])
        failures = by_state.get("failed", set()) | by_state.get("timed_out", set())
        page.select_option("#dep-state", "failed,timed_out")
        expect_device_rows(page, failures)
        assert count_on_page(page, "failed") + count_on_page(page, "timed_out") == len(failures)
        page.click('#counts [data-filter-state="succeeded"]')  # a tile filters the list too
        expect_device_rows(page, by_state.get("succeeded", set()))
        assert page.locator("#dep-state").input_value() == "succeeded"
        assert count_on_page(page, "succeeded") == len(by_state.get("succeeded", set()))
        page.select_option("#dep-state", "")
        expect_device_rows(page, {d["device"] for d in listed})
        shot(page, "dashboard")
        # Which devices had v2 active (reported installed): a rollback switches them back.
        had_v2 = {
            d["device"]
            for d in listed
            if any(
                e["state"] == "installed"
                for e in api.get(f"/api/v1/deployments/{d['id']}/history/").json()
            )
        }
        left_v2 = {
            d["device"]
            for d in listed
            if d["state"] in ("succeeded", "notified", "downloading", "installed")
        }

        # Roll back to v1: a new release, and every device switches back.
        page.click('#actions [data-action="rollback"]')
        page.select_option("#rb-version", str(v1["id"]))
        page.fill("#confirm-reason", "v2 is slower")
        page.click("#confirm-ok")
        page.wait_for_url(re.compile(rf"/releases/(?!{release_id}/)\d+/$"))
        rollback_id = int(re.search(r"/releases/(\d+)/$", page.url).group(1))
        page.wait_for_function(
            f"() => document.querySelector('[data-count=succeeded]').textContent === '{FLEET}'",
            timeout=30_000,
        )
        assert api.get(f"/api/v1/releases/{release_id}/").json()["state"] == "rolled_back"
        page.wait_for_function(
            f"() => document.querySelectorAll('#deployments .state-succeeded').length === {FLEET}"
        )
        shot(page, "dashboard-rollback")
        assert rollback_id != release_id

        # The rollback shows where people look: on the release it undid (its devices left
        # v2), and on the fleet, where every device that had v2 active now says so.
        page.goto(f"{base}/apps/{app}/releases/{release_id}/")
        page.wait_for_function(
            "n => document.querySelector('[data-count=rolled_back]').textContent === String(n)",
            arg=len(left_v2),
        )
        page.goto(f"{base}/apps/{app}/fleet/?task=item-features&rolled_back=yes")
        rolled = set(page.locator("#devices tbody tr td:first-child code").all_inner_texts())
        assert rolled == had_v2, (rolled, had_v2)
        for cell in page.locator('#devices [data-running="item-features"]').all_inner_texts():
            assert cell.startswith("item-features v1") and "rolled back from v2" in cell.lower()
        page.goto(f"{base}/apps/{app}/fleet/?task=item-features&version=2")
        assert page.locator("#devices tbody tr").count() == 0
        page.goto(f"{base}/apps/{app}/fleet/?task=item-features&version=1")
        assert page.locator("#devices tbody tr").count() == FLEET

        # Without websockets (a proxy that drops them) the dashboard says so and polls.
        polling = context.new_page()
        polling.add_init_script("delete window.WebSocket")
        polling.goto(f"{base}/apps/{app}/releases/{rollback_id}/")
        polling.wait_for_selector("#live-status.poll")
        polling.wait_for_function(FINISHED_ON_PAGE, arg=FLEET)
        polling.close()

        # The other main pages, for the record.
        page.goto(f"{base}/apps/{app}/releases/")
        shot(page, "releases")
        page.goto(f"{base}/apps/{app}/fleet/?online=yes")
        assert page.locator("#devices tbody tr").count() == FLEET
        shot(page, "fleet")
        page.locator("#devices tbody tr a").first.click()
        page.wait_for_selector("text=Deployment history")
        shot(page, "device")
        page.goto(f"{base}/apps/{app}/groups/new/")
        page.fill("#g-name", "galaxies")
        page.fill("#g-models", "Galaxy*")
        page.wait_for_selector("#match-count:has-text('match now')")
        shot(page, "group-editor")
        page.click("text=Save group")
        page.wait_for_selector(".msg-success")
        page.goto(f"{base}/apps/{app}/audit/")
        assert page.locator("code", has_text="release.rollback").count() >= 1
        shot(page, "audit")
        page.goto(f"{base}/apps/{app}/")
        shot(page, "overview")
        page.goto(f"{base}/tokens/")
        page.once("dialog", lambda dialog: dialog.accept())  # "Replace your token?"
        page.click("text=Rotate token")  # bootstrap gave admin a token already
        page.wait_for_selector("#new-token")
        shot(page, "tokens")
        # Tablet width: the same dashboard, stacked.
        page.set_viewport_size({"width": 820, "height": 1100})
        page.goto(f"{base}/apps/{app}/releases/{release_id}/")
        page.wait_for_selector("#live-status.on, #live-status.poll")
        shot(page, "dashboard-tablet")
        assert not js_errors, js_errors
    except BaseException:
        shot(page, "failure")
        raise
    finally:
        if js_errors or console_errors:
            print("browser console errors:", *js_errors, *console_errors, sep="\n  ")
        context.close()
        fleet.close()
        print(f"browser test took {time.monotonic() - t0:.1f} s; screenshots in {SHOTS}")
