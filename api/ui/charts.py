"""Accuracy-vs-cost charts as plain geometry, rendered to inline SVG by a template.

Pure: a tier's candidates in, points/ticks/threshold/frontier in pixel space out. Costs span
orders of magnitude across models, so the cost axis turns logarithmic when the spread is
wide; accuracy runs up to 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from contracts.routing_table import RoutingCandidate

WIDTH, HEIGHT = 560, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 16, 48
LOG_SPREAD = 10.0
"""Use a log cost axis when the dearest candidate costs this many times the cheapest."""


@dataclass(frozen=True)
class Point:
    model: str
    effort: str
    accuracy: float
    cost: float
    x: float
    y: float
    meets: bool
    chosen: bool
    rank: int
    label_x: float
    label_anchor: str
    label_y: float = 0.0

    @property
    def nudged(self) -> bool:
        """The label moved off its point's line: the template draws a leader to it."""
        return abs(self.label_y - (self.y + 4)) > 3


@dataclass(frozen=True)
class Tick:
    pos: float
    label: str


@dataclass(frozen=True)
class Chart:
    tier: str
    width: int
    height: int
    plot_left: float
    plot_right: float
    plot_top: float
    plot_bottom: float
    points: tuple[Point, ...]
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    threshold: float
    threshold_y: float
    frontier: str
    """SVG polyline points of the Pareto front (cheapest way to each accuracy level)."""
    log_x: bool
    chosen: str | None

    @property
    def description(self) -> str:
        parts = [
            f"{p.model}: accuracy {p.accuracy:.1%}, {fmt_cost(p.cost)} per case"
            f"{', meets threshold' if p.meets else ', below threshold'}"
            f"{', chosen' if p.chosen else ''}"
            for p in self.points
        ]
        return (
            f"Tier {self.tier}: {len(self.points)} candidates, threshold {self.threshold:.0%}. "
            + "; ".join(parts)
        )


def fmt_cost(usd: float | None) -> str:
    if usd is None:
        return "—"
    if usd == 0:
        return "$0"
    if usd >= 0.01:
        return f"${usd:.4f}"
    return f"${usd:.2e}" if usd < 1e-6 else f"${usd:.6f}"


def _nice_linear(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    out = []
    v = start
    while v <= hi + step * 1e-9:
        out.append(round(v, 12))
        v += step
    return out


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(cost, accuracy) pairs not dominated by a cheaper-or-equal, more accurate one."""
    front: list[tuple[float, float]] = []
    best = -1.0
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((cost, acc))
            best = acc
    return front


LABEL_GAP = 15.0
CHAR_W = 6.8
"""Rough width of a label character at the chart's 12px font (for overlap checks)."""


def _extent(p: Point) -> tuple[float, float]:
    width = CHAR_W * (len(p.model) + (2 if p.chosen else 0))
    return (
        (p.label_x - width, p.label_x)
        if p.label_anchor == "end"
        else (p.label_x, p.label_x + width)
    )


def _spread_labels(points: list[Point]) -> list[Point]:
    """Nudge labels apart vertically where two would overlap (text extents and height)."""
    placed: list[Point] = []
    for p in sorted(points, key=lambda q: q.y):
        y = p.y + 4
        x0, x1 = _extent(p)
        moved = True
        while moved:
            moved = False
            for q in placed:
                q0, q1 = _extent(q)
                if x0 < q1 and q0 < x1 and abs(q.label_y - y) < LABEL_GAP:
                    y = q.label_y + LABEL_GAP
                    moved = True
        placed.append(replace(p, label_y=round(y, 1)))
    return sorted(placed, key=lambda q: q.rank)


def _tick_cost(usd: float) -> str:
    if usd <= 0:
        return "$0"
    decimals = max(0, -math.floor(math.log10(usd)))
    return f"${usd:.{decimals}f}"


def build_chart(
    tier: str, candidates: tuple[RoutingCandidate, ...] | list[RoutingCandidate], threshold: float
) -> Chart:
    left, right = float(LEFT), float(WIDTH - RIGHT)
    top, bottom = float(TOP), float(HEIGHT - BOTTOM)
    costs = [c.avgCostUsd for c in candidates]
    positive = [c for c in costs if c > 0]
    lo_c = min(positive) if positive else 0.0
    hi_c = max(costs) if costs else 1.0
    log_x = bool(positive) and len(positive) == len(costs) and hi_c / lo_c >= LOG_SPREAD
    if log_x:
        lo_e, hi_e = math.floor(math.log10(lo_c)), math.ceil(math.log10(hi_c))
        if lo_e == hi_e:
            hi_e += 1

        def sx(v: float) -> float:
            return left + (math.log10(v) - lo_e) / (hi_e - lo_e) * (right - left)

        x_ticks = [Tick(sx(10.0**e), _tick_cost(10.0**e)) for e in range(lo_e, hi_e + 1)]
    else:
        x_hi = hi_c * 1.1 if hi_c > 0 else 1.0
        ticks = _nice_linear(0.0, x_hi)
        x_hi = max(x_hi, ticks[-1])

        def sx(v: float) -> float:
            return left + v / x_hi * (right - left)

        x_ticks = [Tick(sx(t), _tick_cost(t)) for t in ticks]
    accs = [c.accuracy for c in candidates] + [threshold]
    y_lo = max(0.0, math.floor((min(accs) - 0.05) * 10) / 10)
    y_hi = 1.0

    def sy(v: float) -> float:
        return bottom - (v - y_lo) / (y_hi - y_lo) * (bottom - top)

    y_ticks = [Tick(sy(t), f"{t:.0%}") for t in _nice_linear(y_lo, y_hi) if y_lo <= t <= y_hi]
    chosen = candidates[0].model if candidates else None
    points = []
    for rank, c in enumerate(candidates, start=1):
        x, y = sx(c.avgCostUsd) if (c.avgCostUsd > 0 or not log_x) else left, sy(c.accuracy)
        chosen_here = c.model == chosen
        gap = 15 if chosen_here else 9
        near_right = x + gap + CHAR_W * (len(c.model) + 2) > WIDTH - 4
        points.append(
            Point(
                model=c.model,
                effort=c.reasoningEffort,
                accuracy=c.accuracy,
                cost=c.avgCostUsd,
                x=round(x, 1),
                y=round(y, 1),
                meets=c.meetsThreshold,
                chosen=chosen_here,
                rank=rank,
                label_x=round(x - gap if near_right else x + gap, 1),
                label_anchor="end" if near_right else "start",
            )
        )
    points = _spread_labels(points)
    front = pareto_front([(c.avgCostUsd, c.accuracy) for c in candidates])
    # A staircase: the best accuracy money buys, cost bound by cost bound.
    corners: list[tuple[float, float]] = []
    for cost, acc in front:
        px = sx(cost) if (cost > 0 or not log_x) else left
        if corners:
            corners.append((px, corners[-1][1]))
        corners.append((px, sy(acc)))
    frontier = " ".join(f"{x:.1f},{y:.1f}" for x, y in corners)
    return Chart(
        tier=tier,
        width=WIDTH,
        height=HEIGHT,
        plot_left=left,
        plot_right=right,
        plot_top=top,
        plot_bottom=bottom,
        points=tuple(points),
        x_ticks=tuple(x_ticks),
        y_ticks=tuple(y_ticks),
        threshold=threshold,
        threshold_y=round(sy(threshold), 1),
        frontier=frontier,
        log_x=log_x,
        chosen=chosen,
    )
