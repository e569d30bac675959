"""The what-if panel of the admin page: the live table against a candidate, on real traffic.

Same report as `provenroute whatif` (`api.whatif_report.build_report`): the decisions of the
window are read from the decisions topic when the page is asked, so the window is bounded
(`MAX_WINDOW`) to keep a page load short.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.deps import RuntimeDep
from api.routes import admin_runs
from api.ui.auth import UI_PREFIX, Session
from api.ui.routes import Unavailable, fetch, render
from api.ui.tables import published_versions
from api.whatif_report import WhatIfError, build_report
from contracts.whatif import TOTAL

router = APIRouter(prefix=UI_PREFIX, include_in_schema=False)
MAX_WINDOW = timedelta(days=31)
DEFAULT_WINDOW = timedelta(hours=24)


def _moment(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise WhatIfError(f"{name}: not a date and time: {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _number(value: str | None, name: str, low: float, high: float | None) -> float | None:
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        raise WhatIfError(f"{name}: not a number: {value!r}") from None
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise WhatIfError(f"{name} must be {bound}")
    return number


@router.get("/whatif", response_class=HTMLResponse)
async def whatif_page(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    since: str | None = None,
    until: str | None = None,
    table: str | None = None,
    run: str | None = None,
    min_accuracy: str | None = None,
    acceptance: str | None = None,
    switch_cost_factor: str | None = None,
) -> HTMLResponse:
    now = datetime.now(UTC)
    form = {
        "since": since or (now - DEFAULT_WINDOW).strftime("%Y-%m-%dT%H:%M"),
        "until": until or "",
        "table": table or "",
        "run": run or "",
        "min_accuracy": min_accuracy or "",
        "acceptance": acceptance or "",
        "switch_cost_factor": switch_cost_factor or "",
    }
    report, problem, error, versions = None, None, None, []
    live = None
    try:
        versions = published_versions(await fetch(admin_runs.list_runs(runtime, limit=500)) or [])
        live = await runtime.read_model.latest_routing_table()
    except Unavailable as e:
        error = str(e)
    if table or run:
        try:
            report = await _report(runtime.settings, form, now)
        except WhatIfError as e:
            problem = str(e)
        except Exception as e:  # Kafka or PostgreSQL unreachable: say so, never a 500
            problem = f"could not build the report: {type(e).__name__}: {e}"
    context: dict[str, Any] = {
        "page": "whatif",
        "form": form,
        "versions": versions,
        "live": live,
        "report": report,
        "total": next((r for r in report.rows if r.tier == TOTAL), None) if report else None,
        "problem": problem,
        "error": error,
    }
    return render(request, "whatif.html", context, session=session)


async def _report(settings: Any, form: dict[str, str], now: datetime) -> Any:
    if form["table"] and form["run"]:
        raise WhatIfError("choose a published table or a run to rebuild, not both")
    start = _moment(form["since"], "since")
    end = _moment(form["until"], "until")
    assert start is not None
    if (end or now) - start > MAX_WINDOW:
        raise WhatIfError(
            f"the window is limited to {MAX_WINDOW.days} days here (the CLI has none)"
        )
    if end is not None and end <= start:
        raise WhatIfError("until must be after since")
    if form["acceptance"] not in ("", "point", "lower_bound"):
        raise WhatIfError("acceptance is point or lower_bound")
    return await build_report(
        settings,
        since=start,
        until=end,
        table=form["table"] or None,
        run=form["run"] or None,
        min_accuracy=_number(form["min_accuracy"], "min accuracy", 0.0, 1.0),
        acceptance=form["acceptance"] or None,  # type: ignore[arg-type]
        switch_cost_factor=_number(form["switch_cost_factor"], "switch cost factor", 1.0, None),
    )
