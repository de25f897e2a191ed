"""The health plot of one model: its metric history against the policy's lines, the
moments the registry moved, and the version that served, as one PNG.

Panels share the time axis: the labelled error rate, the fallback and failed-row
shares, the p95 latency, each with the warning / critical / emergency lines the
monitor judged it against (they move when the baseline does: a rollback brings
the new champion's baseline), then a band naming the serving version. Vertical
marks: rollback (red), fallback (orange), promotion (green). A panel with no
measurement says so; a model never swept gets a picture that says so, not
empty axes.

matplotlib's object API (no pyplot): no global figure manager, so plots in
threads of one process (the warm worker) never share state. The PNG is
reduced to a 64-colour palette: it is embedded in a Prefect artifact on every
refresh, so its size is kept to tens of kilobytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import pandas as pd

from prefect_crisis.core.vocabulary import AuditOutcome

SEVERITY_STYLE = {"warning": ("#e69f00", "--"), "critical": ("#d55e00", "--"), "emergency": ("#7b3294", ":")}
MARK_STYLE = {"rollback": ("#cc0000", "-"), "fallback": ("#e69f00", "-"), "promote": ("#009e73", ":")}
PANELS = (
    ("error_rate", ("error_rate",), "error rate (labelled)", "no labelled rows yet: the error rate appears when labels are recorded"),
    ("shares", ("fallback_share", "failed_row_share"), "share of rows", "no rows served in the window"),
    ("latency", ("latency_p95_ms",), "p95 latency (ms)", "no request latency recorded"),
)
VERSION_COLOURS = ("#cfe2f3", "#fde9c9", "#d9ead3", "#ead1dc", "#fff2cc", "#d0e0e3")


def _times(values: Any) -> pd.Series:
    stamps = pd.to_datetime(pd.Series(values), utc=True, errors="coerce")
    return stamps.dt.tz_convert(None)  # matplotlib plots naive datetimes; all of ours are UTC


def version_segments(history: pd.DataFrame, champion_moves: list[dict[str, Any]], end: pd.Timestamp) -> list[tuple[pd.Timestamp, pd.Timestamp, str]]:
    """(start, end, version) of the serving champion over the history's span: the first sweep's version,
    then each applied champion move of the audit inside the span.

    Example:
        >>> h = pd.DataFrame({"at": ["2026-01-01T10:00Z", "2026-01-01T10:10Z"], "version": ["2", "1"]})
        >>> moves = [{"at": "2026-01-01T10:05Z", "to": "1"}]
        >>> [(str(a.time()), str(b.time()), v) for a, b, v in version_segments(h, moves, pd.Timestamp("2026-01-01T10:10"))]
        [('10:00:00', '10:05:00', '2'), ('10:05:00', '10:10:00', '1')]
    """
    stamps = _times(history["at"])
    start, version = stamps.iloc[0], history["version"].iloc[0]
    segments = []
    for move in sorted(champion_moves, key=lambda move: str(move["at"])):
        at = _times([move["at"]]).iloc[0]
        if pd.isna(at) or at <= start or at > end:
            continue
        segments.append((start, at, str(version) if version is not None else "-"))
        start, version = at, move.get("to")
    segments.append((start, end, str(version) if version is not None else "-"))
    return segments


def plot_health(
    model: str,
    history: pd.DataFrame | None,
    actions: Sequence[dict[str, Any]] = (),
    champion_alias: str = "champion",
    now: Any = None,
    dpi: int = 72,
) -> bytes:
    """The model's health plot as PNG bytes.

    Args:
        history: the monitor's metric history (`tasks.monitoring.metric_history`): `at`, `version`, the
            metrics, and `limit:<metric>:<severity>` columns.
        actions: the registry's audit as the dashboard holds it (`at`, `action`, `alias`, `to`, `outcome`).
        now: the right edge (the dashboard's time): the lines and the serving band reach it, so what
            happened after the last sweep (a rollback) is seen to last.
    """
    from matplotlib.figure import Figure

    if history is None or history.empty or "at" not in history.columns:
        figure = Figure(figsize=(10, 1.6))
        figure.text(
            0.5,
            0.5,
            f"No health sweeps of {model} yet: this plot appears after the health-monitor's first sweep.",
            ha="center",
            va="center",
            fontsize=12,
        )
        return _png(figure, dpi)
    history = history.sort_values("at").reset_index(drop=True)
    stamps = _times(history["at"])
    applied = [a for a in actions if a.get("outcome") in (None, AuditOutcome.APPLIED) and a.get("alias") == champion_alias]
    marks = [(kind, at) for a in applied if (kind := str(a.get("action"))) in MARK_STYLE and not pd.isna(at := _times([a["at"]]).iloc[0])]
    edge = [] if now is None else [t for t in _times([now]) if not pd.isna(t)]
    end = max([stamps.iloc[-1], *(at for _, at in marks), *edge])
    span = max(end - stamps.iloc[0], pd.Timedelta(minutes=1))
    left, right = stamps.iloc[0] - span * 0.03, end + span * 0.03

    changes = (history["version"].astype(str) != history["version"].astype(str).shift()).cumsum()
    runs = [group.index for _, group in history.groupby(changes, sort=False)]
    figure = Figure(figsize=(11, 7.2))
    axes = figure.subplots(4, 1, sharex=True, gridspec_kw={"height_ratios": [3, 3, 3, 0.8]})
    # fixed margins, room on the right for the legends (a layout engine doubles the time to draw)
    figure.subplots_adjust(left=0.07, right=0.77, top=0.94, bottom=0.1, hspace=0.14)
    figure.suptitle(f"{model}: health sweeps ({len(history)}), UTC", fontsize=12)
    for axis, (_name, metrics, ylabel, empty) in zip(axes, PANELS, strict=False):  # the fourth axis is the serving band
        drawn = False
        for metric in metrics:
            if metric not in history.columns or history[metric].isna().all():
                continue
            values = history[metric].astype(float)
            line = None
            for run in runs:  # one line per version served: a rollback is a jump, not a slope between two models
                drawn_run = axis.plot(
                    stamps[run],
                    values[run],
                    marker="o",
                    markersize=3,
                    linewidth=1.4,
                    color=None if line is None else line.get_color(),
                    label=None if line is not None else metric.replace("_", " "),
                )
                line = line or drawn_run[0]
            drawn = True
            for severity, (colour, style) in SEVERITY_STYLE.items():
                column = f"limit:{metric}:{severity}"
                if column in history.columns and history[column].notna().any():
                    limits = history[column].astype(float)  # held to the right edge: one sweep still draws its line
                    axis.step(
                        [*stamps, end],
                        [*limits, limits.iloc[-1]],
                        where="post",
                        color=colour,
                        linestyle=style,
                        linewidth=1.1,
                        label=f"{severity} line" + (f" ({metric.replace('_', ' ')})" if len(metrics) > 1 else ""),
                    )
        if not drawn:
            axis.text(0.5, 0.5, empty, transform=axis.transAxes, ha="center", va="center", color="#555555")
            axis.set_yticks([])
        else:
            axis.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7, frameon=False)
            axis.set_ylim(0, axis.get_ylim()[1] * 1.1)  # room above the highest point and line
        axis.set_ylabel(ylabel, fontsize=8)
        for kind, at in marks:
            if left <= at <= right:  # a move before the first sweep shows in the serving band, not as a mark
                colour, style = MARK_STYLE[kind]
                axis.axvline(at, color=colour, linestyle=style, linewidth=1.6)
    for kind, at in marks:  # named once, on the top panel; outside the layout, so a label never squeezes the axes
        if left <= at <= right:
            label = axes[0].annotate(
                kind,
                (at, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, -10),
                textcoords="offset points",
                color=MARK_STYLE[kind][0],
                fontsize=8,
                fontweight="bold",
                annotation_clip=True,
            )
            label.set_in_layout(False)
    band = axes[3]
    colours: dict[str, str] = {}
    for start, stop, version in version_segments(history, applied, end):
        colour = colours.setdefault(version, VERSION_COLOURS[len(colours) % len(VERSION_COLOURS)])
        band.axvspan(start, stop, color=colour)
        band.text(start + (stop - start) / 2, 0.5, f"v{version}" if version != "-" else "-", ha="center", va="center", fontsize=9)
    band.set_yticks([])
    band.set_ylabel("serving", fontsize=8)
    band.set_xlim(left, right)
    for label in band.get_xticklabels():
        label.set(rotation=30, horizontalalignment="right")
    return _png(figure, dpi)


def _png(figure, dpi: int) -> bytes:
    from PIL import Image

    raw = io.BytesIO()
    figure.savefig(raw, format="png", dpi=dpi)
    raw.seek(0)
    small = io.BytesIO()
    Image.open(raw).convert("RGB").quantize(colors=64).save(small, format="png", optimize=True)
    return small.getvalue()
