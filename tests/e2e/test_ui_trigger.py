"""The trigger form in a real browser: Debian's headless Chromium, driven by Playwright, on the e2e Airflow.

Logs into the Airflow 3 UI, fills the ``lerobot_kfold_cv`` trigger form (k, backend, a tiny training),
triggers, and follows the run to its mapped "fold i" tasks, checking each step in the UI and through the
REST API. Screenshots land in ``test-artifacts/ui/`` (git-ignored): ``trigger_form*.png``,
``run_finished.png``, and ``failure.png`` when a step fails.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, Response, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from kfold_cv.settings import CV_GROUPS
from lerobot_kfold.declared import declared
from scripts.airflow_local import USER
from tests.e2e.conftest import DAG_ID, DATASET, E2E

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; Playwright downloads no browser here
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
TRAIN = "kfold_cv.train_fold"
# What the form sets: two folds of a few steps each, so the run takes seconds, not hours.
FORM = {"k": 2, "steps": 4, "eval_every": 2, "save_every": 2, "batch_size": 8}
# The form's sections: one per settings group, in declaration order; which section holds a setting.
SECTIONS = [title for _, title in CV_GROUPS.values()]
SECTION_OF = {name: title for cls, title in CV_GROUPS.values() for name in declared(cls)}
UI_TIMEOUT_MS = 60_000  # CI has two cores, shared with Airflow's scheduler, worker and API server


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    """Debian's Chromium, headless, with a fresh profile, at 1280x800 (the screenshots' size)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "failure.png").unlink(missing_ok=True)
    with sync_playwright() as playwright:
        context: BrowserContext = playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.set_default_navigation_timeout(UI_TIMEOUT_MS)
            yield page
        finally:
            context.close()


def _screenshot(page: Page, name: str) -> None:
    try:
        page.screenshot(path=ARTIFACTS / name)
    except Exception as error:  # the browser itself may be what failed
        print(f"could not save {name}: {error}")


def _scroll_to_top(locator: Locator) -> None:
    locator.evaluate("element => element.scrollIntoView({block: 'start'})")


def test_trigger_form_runs_the_folds(e2e: E2E, page: Page) -> None:
    airflow = e2e.airflow
    runs_before = {r["dag_run_id"] for r in _dag_runs(e2e)}
    try:
        # Log in: the UI sends an anonymous visitor to the simple auth manager's login page.
        page.goto(f"{airflow.url}/dags/{DAG_ID}")
        page.get_by_label("Username").fill(USER)
        page.get_by_label("Password").fill(airflow.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/auth/" not in url and f"/dags/{DAG_ID}" in url)
        expect(page.get_by_role("heading", name=DAG_ID, exact=True)).to_be_visible(timeout=UI_TIMEOUT_MS)

        # The trigger form: one field per Param.
        page.get_by_role("button", name="Trigger Dag").click()
        form = page.get_by_role("dialog")
        expect(form.get_by_role("heading", name=f"Trigger Dag - {DAG_ID}")).to_be_visible(
            timeout=UI_TIMEOUT_MS
        )
        # One section per settings group; the UI opens one at a time.
        _open_section(form, "Dataset")
        dataset_root = form.get_by_role("group").filter(has_text="dataset root").get_by_role("textbox")
        expect(dataset_root).to_have_value(DATASET)  # its default: the demo dataset in local storage
        for name, value in FORM.items():
            _open_section(form, SECTION_OF[name])
            field = form.get_by_role("spinbutton", name=name.replace("_", " "), exact=True)
            field.fill(str(value))
            expect(field).to_have_value(str(value))
        _open_section(form, "Compute")
        form.get_by_role("combobox", name="backend", exact=True).click()
        page.get_by_role("option", name="local", exact=True).click()
        backend_row = form.get_by_role("group").filter(
            has=page.get_by_role("combobox", name="backend", exact=True)
        )
        expect(backend_row).to_contain_text("local")
        _screenshot(page, "trigger_form_backend.png")
        # The small demo ACT (the default is lerobot's full ACT), in the Training section.
        _open_section(form, SECTION_OF["policy_preset"])
        form.get_by_role("combobox", name="policy preset", exact=True).click()
        page.get_by_role("option", name="small", exact=True).click()
        preset_row = form.get_by_role("group").filter(
            has=page.get_by_role("combobox", name="policy preset", exact=True)
        )
        expect(preset_row).to_contain_text("small")
        # The UI refuses to submit while a field is empty and required (its type excludes null) or invalid.
        trigger = form.get_by_role("button", name="Trigger", exact=True)
        try:
            expect(trigger).to_be_enabled(timeout=10_000)
        except AssertionError:
            problems = {}
            for title in SECTIONS:
                _open_section(form, title)
                problems[title] = _invalid_fields(form)
            pytest.fail(f"Trigger stays disabled; fields refused per section: {problems}")
        _open_section(form, "Training")
        _scroll_to_top(form.get_by_role("button", name="Training", exact=True))
        _screenshot(page, "trigger_form_training.png")
        _open_section(form, "Fold planning")
        _scroll_to_top(form.get_by_role("heading", name=f"Trigger Dag - {DAG_ID}"))
        _screenshot(page, "trigger_form.png")

        with page.expect_response(
            lambda r: r.request.method == "POST" and r.url.endswith(f"/dags/{DAG_ID}/dagRuns")
        ) as posted:
            trigger.click()
        response = posted.value
        assert response.status == 200, response.text()
        sent = json.loads(response.request.post_data or "{}")["conf"]
        assert {k: sent[k] for k in FORM} == FORM
        assert sent["backend"] == "local"
        assert sent["policy_preset"] == "small"
        assert sent["dataset_root"] == DATASET

        # The UI opens the new run: its id is in the address and the breadcrumb.
        page.wait_for_url(f"**/dags/{DAG_ID}/runs/**")
        run_id = unquote(page.url.split("/runs/", 1)[1].split("/", 1)[0].split("?", 1)[0])
        expect(page.get_by_role("link", name=run_id, exact=True)).to_be_visible(timeout=UI_TIMEOUT_MS)

        # The REST API agrees: exactly one new run, triggered from the UI by admin, with the form's conf.
        new_runs = [r for r in _dag_runs(e2e) if r["dag_run_id"] not in runs_before]
        assert [r["dag_run_id"] for r in new_runs] == [run_id]
        run = new_runs[0]
        assert run["triggered_by"] == "ui"
        assert run["triggering_user_name"] == USER
        assert run["conf"]["k"] == 2
        assert run["conf"]["backend"] == "local"

        state = airflow.wait_for_run(DAG_ID, run_id, timeout=300)
        assert state == "success", _task_states(e2e, run_id)

        # The finished run in the UI: the mapped train_fold shows "fold 0" and "fold 1", both succeeded.
        page.goto(f"{airflow.url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}")
        for fold in ("fold 0", "fold 1"):
            row = page.get_by_role("row").filter(has=page.get_by_role("link", name=fold, exact=True))
            expect(row).to_have_count(1, timeout=UI_TIMEOUT_MS)
            expect(row).to_contain_text(TRAIN)
            expect(row).to_contain_text("Success", timeout=UI_TIMEOUT_MS)
        expect(page.get_by_role("link", name="fold 2", exact=True)).to_have_count(0)
        _expand_all_task_groups(page)  # the grid shows every task
        expect(page.get_by_text("prepare_dataset", exact=True)).to_be_visible(timeout=UI_TIMEOUT_MS)
        _screenshot(page, "run_finished.png")

        folds = [t for t in airflow.task_instances(DAG_ID, run_id) if t["task_id"] == TRAIN]
        assert sorted((t["map_index"], t["rendered_map_index"], t["state"]) for t in folds) == [
            (0, "fold 0", "success"),
            (1, "fold 1", "success"),
        ]
    except BaseException:
        _screenshot(page, "failure.png")
        raise


def _expand_all_task_groups(page: Page, attempts: int = 3) -> None:
    """Click the grid's "Expand all task groups", reloading the page if the grid never got its structure.

    The toggle renders only once the grid's structure request has answered, and the UI stops asking after
    a few failed tries. The button was missing once in CI on a loaded 2-core machine (cause not captured),
    so a reload asks again, and any failed responses are reported with the failure.
    """
    failed: list[str] = []

    def note_failure(response: Response) -> None:
        if response.status >= 400:
            failed.append(f"{response.status} {response.request.method} {response.url}")

    page.on("response", note_failure)
    toggle = page.get_by_role("button", name="Expand all task groups")
    try:
        for attempt in range(1, attempts + 1):
            try:
                toggle.click(timeout=UI_TIMEOUT_MS // attempts)
                return
            except PlaywrightTimeoutError:
                if attempt == attempts:
                    raise AssertionError(
                        f"no 'Expand all task groups' in the grid after {attempts} loads; "
                        f"failed responses: {failed or 'none'}"
                    ) from None
                print(f"grid toggle missing (load {attempt}); failed responses: {failed or 'none'}")
                page.reload()
    finally:
        page.remove_listener("response", note_failure)


def _open_section(form: Locator, title: str) -> None:
    """Expand one section of the form (a settings group; the UI shows one at a time)."""
    header = form.get_by_role("button", name=title, exact=True)
    expect(header).to_be_visible(timeout=UI_TIMEOUT_MS)
    if header.get_attribute("aria-expanded") != "true":
        header.click()
    expect(header).to_have_attribute("aria-expanded", "true")


def _invalid_fields(form: Locator) -> list[str]:
    """Visible fields the form refuses (empty and required, or failing their schema)."""
    return form.evaluate(
        """dialog => [...dialog.querySelectorAll("input, textarea")]
            .filter(input => input.offsetParent !== null)
            .filter(input => input.getAttribute("aria-invalid") === "true"
                || (input.required && !input.value))
            .map(input => (input.name || input.id) + "=" + JSON.stringify(input.value))"""
    )


def _dag_runs(e2e: E2E) -> list[dict]:
    response = e2e.airflow.api(
        "GET", f"/dags/{DAG_ID}/dagRuns", params={"order_by": "-run_after", "limit": 100}
    )
    response.raise_for_status()
    return response.json()["dag_runs"]


def _task_states(e2e: E2E, run_id: str) -> dict:
    return {(t["task_id"], t["map_index"]): t["state"] for t in e2e.airflow.task_instances(DAG_ID, run_id)}
