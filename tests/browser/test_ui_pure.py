"""The admin page's pure parts: the config form, the chart geometry and the session cookie."""

from __future__ import annotations

from api.ui import auth
from api.ui.charts import build_chart, pareto_front
from api.ui.forms import form_of, parse_form
from contracts.routing_table import RoutingCandidate

FIELDS = {
    "classifierModels": "sim/tiny\nsim/balanced\n",
    "decider_model_0": "sim/tiny",
    "decider_effort_0": "low",
    "decider_model_1": "",
    "decider_effort_1": "medium",
    "decider_model_2": "sim/reasoner",
    "decider_effort_2": "high",
    "minAccuracy": "0.7",
    "switchCostFactor": "3",
    "maxConcurrency": "4",
    "classifierRepetitions": "1",
    "deciderRepetitions": "1",
    "classifierMaxP95LatencyMs": "",
    "acceptance": "point",
    "benchmarkIdentity": "sim-benchmark",
}


def test_form_round_trips_a_config_and_drops_blank_rows() -> None:
    form, config = parse_form(FIELDS)
    assert config is not None and not form.errors
    assert config.classifierModels == ("sim/tiny", "sim/balanced")
    assert [(d.model, d.reasoningEffort) for d in config.deciderModels] == [
        ("sim/tiny", "low"),
        ("sim/reasoner", "high"),
    ]
    assert config.classifierMaxP95LatencyMs is None
    again = form_of(config)
    assert again.classifier_models == "sim/tiny\nsim/balanced"
    assert again.values["minAccuracy"] == "0.7" and again.values["classifierMaxP95LatencyMs"] == ""


def test_form_errors_name_the_field_at_fault() -> None:
    bad = {**FIELDS, "minAccuracy": "1.5", "decider_model_2": "not a model", "maxConcurrency": "x"}
    form, config = parse_form(bad)
    assert config is None
    assert "less than or equal to 1" in form.errors["minAccuracy"]
    assert "decider_model_1" in form.errors  # the second non-blank row
    assert "maxConcurrency" in form.errors
    assert form.values["minAccuracy"] == "1.5"  # what was typed survives
    dup = {**FIELDS, "decider_model_2": "sim/tiny"}
    form, config = parse_form(dup)
    assert config is None and "duplicate" in form.errors["deciderModels"]
    none = {k: v for k, v in FIELDS.items() if not k.startswith("decider_")}
    form, _ = parse_form(none)
    assert form.errors["deciderModels"] == "Add at least one decider model."


def _cand(model: str, acc: float, cost: float, meets: bool) -> RoutingCandidate:
    return RoutingCandidate(
        model=model,
        reasoningEffort="low",
        accuracy=acc,
        accuracyLowerBound=acc / 2,
        avgCostUsd=cost,
        graded=10,
        meetsThreshold=meets,
    )


def test_chart_marks_the_first_candidate_and_places_the_threshold() -> None:
    cands = [
        _cand("sim/cheap", 0.75, 0.0001, True),
        _cand("sim/dear", 0.95, 0.01, True),
        _cand("sim/bad", 0.4, 0.001, False),
    ]
    chart = build_chart("low", cands, 0.7)
    assert chart.log_x  # a 100x spread
    assert [p.chosen for p in chart.points] == [True, False, False]
    by = {p.model: p for p in chart.points}
    assert by["sim/cheap"].x < by["sim/bad"].x < by["sim/dear"].x
    assert by["sim/dear"].y < chart.threshold_y < by["sim/bad"].y  # SVG y grows downwards
    assert chart.plot_top <= chart.threshold_y <= chart.plot_bottom
    assert "sim/cheap" in chart.description and "chosen" in chart.description


def test_pareto_front_keeps_only_undominated_points() -> None:
    pts = [(1.0, 0.5), (2.0, 0.4), (3.0, 0.9), (0.5, 0.5), (4.0, 0.9)]
    assert pareto_front(pts) == [(0.5, 0.5), (3.0, 0.9)]


def test_session_cookie_expires_and_dies_with_the_token() -> None:
    value = auth.new_session("tok", now=1000.0)
    assert "tok" not in value
    assert auth.session_valid(value, "tok", now=1001.0)
    assert not auth.session_valid(value, "tok", now=1000.0 + auth.SESSION_TTL_S + 1)
    assert not auth.session_valid(value, "rotated", now=1001.0)
    assert not auth.session_valid("123.forged", "tok", now=0.0)
    assert auth.safe_next("//evil.example/admin/ui") == "/admin/ui"
    assert auth.safe_next("https://evil.example") == "/admin/ui"
    assert auth.safe_next("/admin/ui/runs?x=1") == "/admin/ui/runs?x=1"


def test_run_page_shows_each_candidates_timeout_share_and_a_failed_runs_reason() -> None:
    from api.ui.routes import templates
    from api.ui.tables import run_progress

    summary = {
        "model": "sim/balanced",
        "tier": "low",
        "accuracy": 0.9,
        "accuracy_lower_bound": 0.8,
        "graded": 40,
        "avg_cost_usd": 0.001,
        "p95_latency_ms": 1900.0,
        "timeouts": 3,
        "carried": False,
        "source_run_id": None,
        "harness": None,
    }
    run = {
        "run_id": "r1",
        "kind": "classifier",
        "min_accuracy": 0.7,
        "models": [],
        "spend_usd": 0.04,
        "outcome": None,
    }
    failed = {"status": "failed", "failure_reason": "all 72 expected results were lost"}
    page = templates.get_template("run.html").render(
        run_id="r1",
        run={**run, **failed, "summaries": [summary]},
        progress=run_progress({**run, **failed, "expected_results": 72}),
        command=None,
        ui="/admin/ui",
        csrf="",
        logged_in=True,
    )
    assert '<td class="num timeouts">3 (7.5%)</td>' in page
    assert "Failed: all 72 expected results were lost" in page
    assert 'data-status="failed"' in page
