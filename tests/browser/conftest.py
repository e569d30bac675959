"""Browser fixtures: the whole stack for real, and Debian's Chromium driven by Playwright.

The stack is the e2e suite's SIMULATED provider (zero latency) and worker, plus the
projector and the API server as child processes, on this module's own topic prefix and
PostgreSQL schema. The browser is /usr/bin/chromium (apt package `chromium`): Playwright's
own browser downloads need the internet.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from infra.processes import ChildProcess, start_projector, start_serve, start_worker
from infra.settings import PROJECT_ROOT, Settings
from tests.conftest import delete_topics_with_prefix, unique_name
from tests.e2e.conftest import LOG_ROOT, _clean_containers_after, run_async, sim_url

__all__ = ["_clean_containers_after", "sim_url"]

CHROMIUM = os.environ.get("PROVENROUTE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = PROJECT_ROOT / "artifacts" / "screenshots"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser/test_admin_ui" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@dataclass
class Stack:
    """One module's running world, seen from the browser."""

    url: str
    token: str
    settings: Settings
    workdir: Path
    procs: dict[str, ChildProcess] = field(default_factory=dict)

    def diagnostics(self) -> str:
        return "\n".join(p.tail() for p in self.procs.values())

    def stop(self) -> None:
        # The API first (it posts), the worker last (it may still be finishing a job).
        for name in ("api", "projector", "worker"):
            if name in self.procs:
                self.procs[name].stop()


@pytest.fixture(scope="module")
def stack(sim_url: str) -> Iterator[Stack]:
    """Worker, projector and API on a fresh topic prefix and schema, wired to the sim."""
    import psycopg

    from streams.kafka_admin import ensure_topics

    base = Settings()
    prefix = unique_name("tb") + "."
    schema = unique_name("s_ui_")
    run_async(ensure_topics(base.kafka_bootstrap, prefix))
    with psycopg.connect(base.database_url, autocommit=True) as conn:
        conn.execute(f'create schema "{schema}"')
    settings = base.model_copy(update={"topic_prefix": prefix, "db_schema": schema})
    workdir = LOG_ROOT / prefix.rstrip(".")
    workdir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "PROVENROUTE_TOPIC_PREFIX": prefix,
        "PROVENROUTE_DB_SCHEMA": schema,
        "PROVENROUTE_PROVIDER_BASE_URL": sim_url,
        "PROVENROUTE_PROVIDER_TIMEOUT_S": "20",
        "PROVENROUTE_ADMIN_TOKEN": token,
        "PROVENROUTE_SIM_LATENCY_SCALE": "0",
        "PROVENROUTE_DECIDE_STARTUP_TIMEOUT_S": "20",
        "PROVENROUTE_WORKER_JOB_SLOTS": "8",
        "BROKER_SESSION_TIMEOUT": "10",
        "BROKER_HEARTBEAT_INTERVAL": "1",
    }
    world = Stack(url="", token=token, settings=settings, workdir=workdir)
    try:
        world.procs["worker"] = start_worker(workdir, env)
        world.procs["projector"] = start_projector(workdir, env)
        world.procs["api"], world.url = start_serve(workdir, env, ready_path="/healthz")
        yield world
    finally:
        world.stop()
        run_async(delete_topics_with_prefix(base.kafka_bootstrap, prefix))
        with (
            contextlib.suppress(Exception),
            psycopg.connect(base.database_url, autocommit=True) as conn,
        ):
            conn.execute(f'drop schema "{schema}" cascade')


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    context = browser.new_context(base_url=stack.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    pg = context.new_page()
    yield pg
    context.close()


def screenshot(page: Any, name: str) -> Path:
    """A full-page PNG under artifacts/screenshots/ (git-ignored; CI keeps it as an artifact)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
