"""The admin web page in a real browser (Debian's Chromium via Playwright) on the real stack:
Kafka, PostgreSQL, a worker running jobs in Docker, the projector and the SIMULATED fleet.

One story, in the order an admin lives it: log in, save a config (after a rejected bad value),
run the classifier and the decider benchmarks and watch them complete, read the published
table, pin the classifier, look at the charts. Every page is saved under
artifacts/screenshots/.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.sync_api import expect

from contracts.config import BenchmarkConfig, DeciderModel
from tests.browser.conftest import Stack, screenshot
from tests.e2e.expected import expected_table

RUN_TIMEOUT_MS = 900_000
"""Generous: a state is waited for, never timed (timings live in bench/)."""

CLASSIFIERS = ("sim/flash-lite", "sim/balanced")
DECIDERS = (("sim/flash-lite", "low"), ("sim/balanced", "medium"), ("sim/reasoner", "high"))


def chosen_per_tier(min_accuracy: float) -> dict[str, str]:
    """Each tier's first candidate a decider run of the page's config must publish."""
    config = BenchmarkConfig(
        classifierModels=CLASSIFIERS,
        deciderModels=tuple(DeciderModel(model=m, reasoningEffort=e) for m, e in DECIDERS),
        minAccuracy=min_accuracy,
    )
    return {tier: rows[0].model for tier, rows in expected_table(config).items()}


def login(page: Any, stack: Stack, target: str = "/admin/ui") -> None:
    page.goto(target)
    page.fill("#token", stack.token)
    page.press("#token", "Enter")  # the form submits from the keyboard
    page.wait_for_url(re.compile(r"/admin/ui(?!/login)"))


def test_login_trades_the_token_for_an_httponly_cookie(page: Any, stack: Stack) -> None:
    # Unauthenticated: every page sends the browser to the login form, remembering where.
    page.goto("/admin/ui/runs")
    expect(page).to_have_url(re.compile(r"/admin/ui/login\?next=%2Fadmin%2Fui%2Fruns$"))
    expect(page.get_by_label("Admin token")).to_be_focused()

    # A wrong token: the error sits next to the field.
    page.get_by_label("Admin token").fill("not-the-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#token-error")).to_have_text(re.compile("not the admin token"))
    expect(page.locator("#token")).to_have_attribute("aria-invalid", "true")
    screenshot(page, "01-login")

    page.get_by_label("Admin token").fill(stack.token)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{stack.url}/admin/ui/runs")
    assert stack.token not in page.url
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["provenroute_ui"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert session["path"] == "/admin/ui" and stack.token not in session["value"]
    # Scripts cannot read it, and it is no bearer token for the JSON admin API.
    assert "provenroute_ui" not in page.evaluate("document.cookie")
    r = httpx.get(f"{stack.url}/admin/config", cookies={"provenroute_ui": session["value"]})
    assert r.status_code == 401

    # Keyboard: the first Tab reaches the skip link, which jumps to the content.
    page.keyboard.press("Tab")
    expect(page.locator("a.skip")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#main")).to_be_focused()

    # Posting without the page's form token is refused (CSRF).
    r = page.request.post(f"{stack.url}/admin/ui/runs", form={"kind": "classifier"})
    assert r.status == 403

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile("/admin/ui/login"))
    assert "provenroute_ui" not in {c["name"] for c in page.context.cookies()}


def fill_config(page: Any, min_accuracy: str) -> None:
    page.get_by_label("Classifier models").fill("\n".join(CLASSIFIERS))
    for i, (model, effort) in enumerate(DECIDERS):
        if not page.locator(f"#decider_model_{i}").is_visible():
            page.get_by_role("button", name="Add a decider model").click()
        page.get_by_label(f"Model {i + 1}", exact=True).fill(model)
        page.get_by_label(f"Reasoning effort {i + 1}").select_option(effort)
    page.get_by_label("Min accuracy").fill(min_accuracy)
    page.get_by_label("Benchmark identity").fill("sim-benchmark")
    page.get_by_label("Classifier p95 latency budget (ms)").fill("")
    page.get_by_label("Max concurrency").fill("8")


def start_run(page: Any, kind: str) -> str:
    page.goto("/admin/ui/runs")
    page.get_by_label(kind.capitalize(), exact=True).check()
    page.get_by_role("button", name="Start run").click()
    page.wait_for_url(re.compile(r"/admin/ui/runs/[^/?]+"))
    return page.url.split("/runs/")[1].split("?")[0]


def wait_completed(page: Any, run_id: str) -> None:
    """The page follows the run live (SSE) and reloads itself once it completed."""
    progress = page.locator(f"#progress[data-run='{run_id}']")
    expect(progress).to_have_attribute("data-status", "completed", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#summaries")).to_be_visible(timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#run-progress")).to_have_attribute("value", "100")


def test_configure_run_watch_and_compare(page: Any, stack: Stack) -> None:
    login(page, stack, "/admin/ui/config")
    expect(page.get_by_text("No config is saved yet")).to_be_visible()

    # ---- a bad value: a client-side hint while typing, the server's error next to it
    fill_config(page, "1.5")
    expect(page.locator("#minAccuracy-client")).to_contain_text("Hint:")
    page.get_by_role("button", name="Save config").click()
    error = page.locator("#minAccuracy-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("less than or equal to 1")
    expect(page.get_by_label("Min accuracy")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Min accuracy")).to_be_focused()
    expect(page.locator("#form-errors")).to_contain_text("minAccuracy")
    # what was typed survives the round trip
    expect(page.get_by_label("Model 3", exact=True)).to_have_value("sim/reasoner")
    screenshot(page, "02-config-invalid")

    # ---- the fix is saved; the command's outcome shows
    page.get_by_label("Min accuracy").fill("0.7")
    page.get_by_role("button", name="Save config").click()
    outcome = page.locator(".outcome")
    expect(outcome).to_have_attribute("data-status", "accepted", timeout=60_000)
    expect(page.get_by_text("Live config")).to_be_visible(timeout=15_000)
    expect(page.get_by_label("Model 3", exact=True)).to_have_value("sim/reasoner")
    expect(page.get_by_label("Min accuracy")).to_have_value("0.7")
    screenshot(page, "03-config-saved")

    # ---- a classifier run, watched live until it completes
    run_id = start_run(page, "classifier")
    wait_completed(page, run_id)
    expect(page.locator("#run-outcome")).to_contain_text("classifier winner")
    rows = page.locator("#summaries tbody tr")
    expect(rows).to_have_count(len(CLASSIFIERS) * 3)  # per model and tier
    screenshot(page, "04-run-classifier")

    # ---- a decider run (jobs in Docker containers): progress, then the summaries
    decider_run = start_run(page, "decider")
    expect(page.locator("#run-counts")).to_contain_text(" of ", timeout=60_000)
    page.wait_for_function(
        "document.querySelector('#run-progress').value > 10", timeout=RUN_TIMEOUT_MS
    )
    screenshot(page, "05-run-decider-progress")
    wait_completed(page, decider_run)
    expect(page.locator("#run-outcome")).to_contain_text("published routing table")
    expect(page.locator("#summaries tbody tr")).to_have_count(len(DECIDERS) * 3)
    screenshot(page, "06-run-decider")

    page.goto("/admin/ui/runs")
    expect(page.locator("#runs-table tbody tr")).to_have_count(2)
    expect(page.locator(f"tr[data-run='{decider_run}']")).to_contain_text("published table")
    screenshot(page, "07-runs")

    # ---- the published table: each tier shows the model the fleet's profiles predict
    first_choice = chosen_per_tier(0.7)
    assert len(set(first_choice.values())) == 3, first_choice  # the tiers are told apart
    page.goto("/admin/ui/routing-table")
    expect(page.locator("#table-meta")).to_contain_text(decider_run[:12])
    for tier, model in first_choice.items():
        chosen = page.locator(f"section.tier[data-tier='{tier}'] tbody tr.chosen")
        expect(chosen).to_have_count(1)
        expect(chosen.locator("th")).to_have_text(re.compile(rf"^{re.escape(model)}\s+chosen$"))
    expect(page.locator("#classifier-winner")).to_contain_text(
        re.compile("|".join(re.escape(m) for m in CLASSIFIERS))
    )

    # ---- a stricter threshold: a carried re-run republishes, and the diff explains it
    page.goto("/admin/ui/config")
    page.get_by_label("Min accuracy").fill("0.85")
    page.get_by_role("button", name="Save config").click()
    expect(page.locator(".outcome")).to_have_attribute("data-status", "accepted", timeout=60_000)
    stricter_run = start_run(page, "decider")
    wait_completed(page, stricter_run)
    stricter = chosen_per_tier(0.85)
    moved = sorted(t for t in stricter if stricter[t] != first_choice[t])
    assert moved, (first_choice, stricter)  # else the comparison below shows nothing
    page.goto("/admin/ui/routing-table")
    expect(page.locator("#table-meta")).to_contain_text(stricter_run[:12])
    page.get_by_label("From", exact=True).fill(decider_run)
    page.get_by_label("To", exact=True).fill(stricter_run)
    page.get_by_role("button", name="Compare").click()
    result = page.locator("#diff-result")
    expect(result).to_contain_text("minAccuracy: 0.7 -> 0.85")
    for tier in moved:
        rank_up = result.locator("tbody tr", has_text="rank up").filter(has_text=stricter[tier])
        expect(rank_up.filter(has=page.locator(f"td:text-is('{tier}')"))).to_have_count(1)
    # pin the classifier
    page.get_by_label("Override model").fill("sim/balanced")
    page.get_by_role("button", name="Set override").click()
    expect(page.locator("#classifier .outcome")).to_have_attribute(
        "data-status", "accepted", timeout=60_000
    )
    for _ in range(600):  # the projector follows the accepted event; reload until it has
        page.goto("/admin/ui/routing-table")
        if "override" in (page.locator("#classifier-effective").text_content() or ""):
            break
        page.wait_for_timeout(250)
    expect(page.locator("#classifier-effective")).to_contain_text("sim/balanced")
    expect(page.locator("#classifier-effective")).to_contain_text("override")
    screenshot(page, "08-routing-table")

    # ---- charts: every tier, threshold line, the chosen model highlighted, focusable points
    page.goto("/admin/ui/charts")
    charts = page.locator("figure.chart")
    expect(charts).to_have_count(3)
    for i in range(3):
        chart = charts.nth(i)
        expect(chart.locator("g.pt")).to_have_count(len(DECIDERS))
        expect(chart.locator("g.pt.is-chosen")).to_have_count(1)
        expect(chart.locator("g.threshold line")).to_have_count(1)
    first_point = charts.nth(0).locator("g.pt").first
    first_point.focus()
    expect(first_point).to_be_focused()
    expect(first_point).to_have_attribute("aria-label", re.compile(r"accuracy .*per case"))
    screenshot(page, "09-charts")

    # ---- the overview sums it up
    page.goto("/admin/ui")
    expect(page.locator("#runs-table tbody tr")).to_have_count(3)
    expect(page.locator("figure.chart")).to_have_count(3)
    expect(page.get_by_text("Live routing table")).to_be_visible()
    screenshot(page, "10-overview")
