"""The diagnosis as the incident's artifact shows it: its markdown and its plot (confusion matrix, error over time).
Plain functions over a `DiagnosticReport`; the `diagnose-model` task publishes what they make."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from prefect_crisis.tasks.response.diagnostics import DiagnosticReport


def render_diagnosis(report: DiagnosticReport, model: str, version: str, run_link: str | None, plot_png: bytes | None = None) -> str:
    """The diagnosis artifact's markdown; `run_link`: the incident's run in the MLflow UI (None: no UI known)."""
    lines = [f"# Diagnosis of `{model}` v{version}", "", f"{report.rows:,} labelled predictions, error rate **{report.shown_error_rate}**", ""]
    if plot_png:  # embedded: the Prefect UI renders a data: URI image, not a file:// path
        lines += [f"![Confusion matrix and error over time](data:image/png;base64,{base64.b64encode(plot_png).decode()})", ""]
    if run_link:
        lines += [f"The plot, the diagnosis as JSON and the health plot: [the incident's MLflow run]({run_link})", ""]
    if report.recommendations:
        lines += ["## Recommendations", ""]
        lines += [f"- **{r.action.value}**: {r.reason} (findings: {', '.join(r.findings)})" for r in report.recommendations]
        lines.append("")
    if report.change_window:
        lines += [f"Error changed most (by {report.change:+.1%}) in the window starting {report.change_window.start}.", ""]
    if report.slices:
        lines += [
            "## Slices with significantly more errors",
            "",
            "| feature | slice | rows | error rate | rest | z |",
            "|---|---|---:|---:|---:|---:|",
        ]
        lines += [f"| {s.feature} | {s.slice} | {s.rows:,} | {s.error_rate:.1%} | {s.rest_error_rate:.1%} | {s.z:.1f} |" for s in report.slices[:10]]
        lines.append("")
    if report.drifted_features:
        lines += [f"Drifted features: {', '.join(report.drifted_features)}", ""]
    lines += ["## Per class", "", "| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {c.label} | {c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} | {c.support:,} |" for c in report.per_class]
    return "\n".join(lines)


def plot_diagnosis(report: DiagnosticReport, path: Path) -> None:
    # matplotlib's object API, not pyplot: no global figure manager, so responses in threads of one process can plot at once.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    left, right = figure.subplots(1, 2)
    confusion = np.array(report.confusion)
    left.imshow(confusion, cmap="Blues")
    left.set(title="Confusion matrix", xlabel="predicted", ylabel="true", xticks=range(len(report.labels)), yticks=range(len(report.labels)))
    left.set_xticklabels(report.labels)
    left.set_yticklabels(report.labels)
    for (row, column), value in np.ndenumerate(confusion):
        dark = value > confusion.max() / 2
        left.text(column, row, f"{value:,}", ha="center", va="center", color="white" if dark else "black")
    rates = [w.error_rate for w in report.error_over_time]
    right.plot(range(len(rates)), rates, marker="o")
    right.set(title="Error rate over time", xlabel="time window", ylabel="error rate", ylim=(0, 1))
    figure.tight_layout()
    figure.savefig(path, dpi=80)
