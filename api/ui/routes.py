"""The admin web page: /admin/ui. Thin handlers over the admin API's own handlers.

Every page calls the same functions the JSON admin API serves (`api.routes.admin_*`),
in-process: saving a config, starting a run or pinning the classifier posts the same command,
reads go through the same read model. Forms post back here (post/redirect/get); a little
JavaScript adds live progress and command outcomes, and every page still works without it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.templating import Jinja2Templates

from api.deps import RuntimeDep, SettingsDep
from api.routes import admin_commands, admin_config, admin_routing, admin_runs
from api.ui import auth
from api.ui.auth import COOKIE, UI_PREFIX, Session
from api.ui.charts import Chart, build_chart, fmt_cost
from api.ui.forms import EFFORTS, HINTS, form_of, parse_form
from api.ui.tables import ENDED, published_versions, run_progress, table_diff
from contracts.ids import derive_id
from contracts.taxonomy import TIERS

HERE = Path(__file__).resolve().parent
STATIC = {
    "app.css": ("text/css; charset=utf-8", HERE / "static" / "app.css"),
    "app.js": ("text/javascript; charset=utf-8", HERE / "static" / "app.js"),
    "favicon.svg": ("image/svg+xml", HERE / "static" / "favicon.svg"),
}
STREAM_POLL_S = 0.5
STREAM_MAX_S = 900.0
T = TypeVar("T")

router = APIRouter(prefix=UI_PREFIX, include_in_schema=False)
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters.update(
    cost=fmt_cost,
    pct=lambda v: "—" if v is None else f"{v:.1%}",
    ms=lambda v: "—" if v is None else f"{v:,.0f} ms",
    ts=lambda v: "—" if not v else str(v).replace("T", " ").removesuffix("Z")[:19] + " UTC",
)


class Unavailable(Exception):
    """A read or a post failed (Kafka or PostgreSQL down): the page says so."""


async def fetch(awaitable: Awaitable[T]) -> T | None:
    """An admin handler's answer; None for its 404, Unavailable for its 503."""
    try:
        return await awaitable
    except HTTPException as e:
        if e.status_code == status.HTTP_404_NOT_FOUND:
            return None
        raise Unavailable(str(e.detail)) from None


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    session: str | None = None,
    code: int = 200,
) -> HTMLResponse:
    settings = request.app.state.runtime.settings
    csrf = auth.csrf_for(session, settings.admin_token.get_secret_value()) if session else ""
    return templates.TemplateResponse(
        request,
        name,
        {"csrf": csrf, "logged_in": session is not None, "ui": UI_PREFIX, **context},
        status_code=code,
        headers={"Cache-Control": "no-store"},
    )


def see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status.HTTP_303_SEE_OTHER)


def _csrf(session: str, csrf: str | None, settings: Any) -> None:
    auth.check_csrf(session, csrf, settings.admin_token.get_secret_value())


Csrf = Annotated[str | None, Form()]


# ---- assets and login ------------------------------------------------------------------


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    if name not in STATIC:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such asset")
    media_type, path = STATIC[name]
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "max-age=300"})


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return render(request, "login.html", {"next": auth.safe_next(next), "login_error": None})


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    settings: SettingsDep,
    token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = UI_PREFIX,
) -> Response:
    secret = settings.admin_token.get_secret_value()
    if not token or not auth.token_matches(token, secret):
        return render(
            request,
            "login.html",
            {"next": auth.safe_next(next), "login_error": "That is not the admin token."},
            code=status.HTTP_401_UNAUTHORIZED,
        )
    response = see_other(auth.safe_next(next))
    response.set_cookie(
        COOKIE,
        auth.new_session(secret),
        max_age=auth.SESSION_TTL_S,
        path=UI_PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(session: Session, settings: SettingsDep, csrf: Csrf = None) -> Response:
    _csrf(session, csrf, settings)
    response = see_other(f"{UI_PREFIX}/login")
    response.delete_cookie(COOKIE, path=UI_PREFIX)
    return response


# ---- overview --------------------------------------------------------------------------


async def _table_and_charts(runtime: Any, as_of: datetime | None = None) -> tuple[Any, list[Chart]]:
    table = await fetch(admin_routing.routing_table(runtime, as_of))
    charts = [build_chart(t, table.tiers[t], table.minAccuracy) for t in TIERS] if table else []
    return table, charts


@router.get("", response_class=HTMLResponse)
async def overview(request: Request, session: Session, runtime: RuntimeDep) -> HTMLResponse:
    try:
        runs = await fetch(admin_runs.list_runs(runtime, limit=8)) or []
        table, charts = await _table_and_charts(runtime)
        classifier = await fetch(admin_routing.classifier_winner(runtime))
        error = None
    except Unavailable as e:
        runs, table, charts, classifier, error = [], None, [], None, str(e)
    context = {
        "page": "overview",
        "runs": runs,
        "table": table,
        "charts": charts,
        "classifier": classifier,
        "error": error,
    }
    return render(request, "overview.html", context, session=session)


# ---- config ----------------------------------------------------------------------------


@router.get("/config", response_class=HTMLResponse)
async def config_page(
    request: Request, session: Session, runtime: RuntimeDep, command: str | None = None
) -> HTMLResponse:
    error = None
    saved = None
    try:
        saved = await fetch(admin_config.get_config(runtime))
    except Unavailable as e:
        error = str(e)
    status_ = await _command(runtime, command)
    if (
        command is not None
        and status_ is not None
        and status_.status == "accepted"
        and (saved is None or saved.configId != derive_id("BenchmarkConfigSaved", command))
    ):
        # Accepted, but the projector has not folded the saved config yet: keep watching.
        status_ = status_.model_copy(
            update={"status": "pending", "reason": "Accepted; loading the saved config…"}
        )
    form = form_of(saved.config if saved else None)
    return render(
        request,
        "config.html",
        {
            "page": "config",
            "form": form,
            "saved": saved,
            "efforts": EFFORTS,
            "hints": HINTS,
            "command": status_,
            "error": error,
        },
        session=session,
    )


@router.post("/config", response_class=HTMLResponse)
async def save_config(
    request: Request, session: Session, runtime: RuntimeDep, settings: SettingsDep
) -> Response:
    raw = await request.form()
    fields = {k: v for k, v in raw.items() if isinstance(v, str)}
    _csrf(session, fields.get("csrf"), settings)
    form, config = parse_form(fields)
    error = None
    if config is not None:
        try:
            posted = await fetch(admin_config.put_config(config, runtime))
            assert posted is not None
            return see_other(f"{UI_PREFIX}/config?command={quote(posted.commandId)}")
        except Unavailable as e:
            error = str(e)
    return render(
        request,
        "config.html",
        {
            "page": "config",
            "form": form,
            "saved": None,
            "efforts": EFFORTS,
            "hints": HINTS,
            "command": None,
            "error": error,
        },
        session=session,
        code=(
            status.HTTP_422_UNPROCESSABLE_CONTENT
            if form.errors
            else status.HTTP_503_SERVICE_UNAVAILABLE
        ),
    )


# ---- commands --------------------------------------------------------------------------


async def _command(runtime: Any, command_id: str | None) -> Any:
    if not command_id:
        return None
    try:
        found = await fetch(admin_commands.command_status(command_id, runtime))
    except Unavailable:
        found = None
    return found or admin_commands.CommandStatus(
        commandId=command_id, status="pending", commandType=None
    )


@router.get("/commands/{command_id}")
async def command_json(command_id: str, session: Session, runtime: RuntimeDep) -> Response:
    found = await _command(runtime, command_id)
    return Response(orjson.dumps(found.model_dump()), media_type="application/json")


# ---- runs ------------------------------------------------------------------------------


@router.get("/runs", response_class=HTMLResponse)
async def runs_page(request: Request, session: Session, runtime: RuntimeDep) -> HTMLResponse:
    error = None
    try:
        runs = await fetch(admin_runs.list_runs(runtime, limit=100)) or []
    except Unavailable as e:
        runs, error = [], str(e)
    return render(
        request, "runs.html", {"page": "runs", "runs": runs, "error": error}, session=session
    )


@router.post("/runs")
async def start_run(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    settings: SettingsDep,
    kind: Annotated[str, Form()],
    force: Annotated[bool, Form()] = False,
    csrf: Csrf = None,
) -> Response:
    _csrf(session, csrf, settings)
    if kind not in ("classifier", "decider"):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "kind: classifier or decider")
    body = admin_runs.StartRunRequest(kind=kind, force=force)  # type: ignore[arg-type]
    try:
        posted = await fetch(admin_runs.start_run(body, runtime))
    except Unavailable as e:
        return render(
            request,
            "runs.html",
            {"page": "runs", "runs": [], "error": str(e)},
            session=session,
            code=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    assert posted is not None and posted.runId is not None
    return see_other(f"{UI_PREFIX}/runs/{quote(posted.runId)}?command={quote(posted.commandId)}")


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_page(
    request: Request,
    run_id: str,
    session: Session,
    runtime: RuntimeDep,
    command: str | None = None,
) -> HTMLResponse:
    error = None
    run = None
    try:
        run = await fetch(admin_runs.get_run(run_id, runtime))
    except Unavailable as e:
        error = str(e)
    status_ = await _command(runtime, command)
    if run is None and status_ is None and error is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown run {run_id!r}")
    return render(
        request,
        "run.html",
        {
            "page": "runs",
            "run_id": run_id,
            "run": run,
            "progress": run_progress(run),
            "command": status_,
            "error": error,
        },
        session=session,
    )


@router.get("/runs/{run_id}/stream")
async def run_stream(
    request: Request,
    run_id: str,
    session: Session,
    runtime: RuntimeDep,
    command: str | None = None,
) -> StreamingResponse:
    """Server-sent events: `progress` while the projection follows the run's events, then
    `completed` (or `rejected` when the StartRun command was refused)."""

    async def events() -> AsyncIterator[bytes]:
        last: dict[str, Any] | None = None
        quiet_since = time.monotonic()
        deadline = time.monotonic() + STREAM_MAX_S
        yield b"retry: 2000\n\n"
        while time.monotonic() < deadline and not await request.is_disconnected():
            try:
                run = await runtime.read_model.run(run_id)
            except Exception:
                run = None
            if run is None and command:
                found = await _command(runtime, command)
                if found.status == "rejected":
                    yield _sse("rejected", {"reason": found.reason})
                    return
            progress = run_progress(run)
            if progress != last:
                yield _sse("progress", progress)
                last, quiet_since = progress, time.monotonic()
            elif time.monotonic() - quiet_since > 15:
                yield b": keep-alive\n\n"
                quiet_since = time.monotonic()
            if progress["status"] in ENDED:
                yield _sse("completed", progress)
                return
            await asyncio.sleep(STREAM_POLL_S)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _sse(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


# ---- routing table, classifier ----------------------------------------------------------


def _as_of(value: str | None) -> tuple[datetime | None, str | None]:
    if not value:
        return None, None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None, "Use a date and time, e.g. 2026-06-01T12:00."
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)), None


@router.get("/routing-table", response_class=HTMLResponse)
async def routing_page(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    as_of: str | None = None,
    a: str | None = None,
    b: str | None = None,
    command: str | None = None,
) -> HTMLResponse:
    moment, as_of_error = _as_of(as_of)
    error = None
    table, classifier, versions, diff, diff_error = None, None, [], None, None
    try:
        table = await fetch(admin_routing.routing_table(runtime, moment))
        classifier = await fetch(admin_routing.classifier_winner(runtime))
        versions = published_versions(await fetch(admin_runs.list_runs(runtime, limit=500)) or [])
        saved = await fetch(admin_config.get_config(runtime))
        if a and b:
            diff, diff_error = await table_diff(runtime.read_model, a, b)
    except Unavailable as e:
        error, saved = str(e), None
    return render(
        request,
        "routing.html",
        {
            "page": "routing",
            "table": table,
            "tiers": TIERS,
            "as_of": as_of or "",
            "as_of_error": as_of_error,
            "classifier": classifier,
            "classifier_models": saved.config.classifierModels if saved else (),
            "versions": versions,
            "a": a or "",
            "b": b or "",
            "diff": diff,
            "diff_error": diff_error,
            "command": await _command(runtime, command),
            "error": error,
        },
        session=session,
    )


@router.post("/classifier-override")
async def set_override(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    settings: SettingsDep,
    model: Annotated[str, Form()] = "",
    clear: Annotated[str | None, Form()] = None,
    csrf: Csrf = None,
) -> Response:
    _csrf(session, csrf, settings)
    from pydantic import ValidationError

    try:
        body = admin_routing.OverrideRequest(model=None if clear or not model.strip() else model)
    except ValidationError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "model: not a valid model id"
        ) from None
    try:
        posted = await fetch(admin_routing.set_override(body, runtime))
    except Unavailable as e:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(e)) from None
    assert posted is not None
    return see_other(f"{UI_PREFIX}/routing-table?command={quote(posted.commandId)}#classifier")


# ---- charts ----------------------------------------------------------------------------


@router.get("/charts", response_class=HTMLResponse)
async def charts_page(
    request: Request, session: Session, runtime: RuntimeDep, as_of: str | None = None
) -> HTMLResponse:
    moment, as_of_error = _as_of(as_of)
    error = None
    table: Any = None
    charts: list[Chart] = []
    try:
        table, charts = await _table_and_charts(runtime, moment)
    except Unavailable as e:
        error = str(e)
    return render(
        request,
        "charts.html",
        {
            "page": "charts",
            "table": table,
            "charts": charts,
            "as_of": as_of or "",
            "as_of_error": as_of_error,
            "error": error,
        },
        session=session,
    )
