"""The drill's report: a line per run for a person following it, the summary per scenario (success rate, times to
detect, mitigate and recover, the end state), a picture of the times, and the JSON and PNG written for the record."""

from __future__ import annotations

import io
import json
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect_crisis.tasks.drills.scenario import DrillResult


def describe(result: DrillResult) -> str:
    """One line for a person following the drill.

    Example:
        >>> describe(DrillResult("latency-spike", 0, 7, "drill-latency-spike-1", True, 0.61, 0.61, 1.2, None, (), {}, 9.5))
        'latency-spike #0 (seed 7): passed; detect 0.61 s, mitigate 0.61 s, recover 1.20 s [drill-latency-spike-1, 9.5 s]'
        >>> line = describe(DrillResult("real-bad-release", 0, 7, "drill-real-bad-release-1", True, 0.9, 2.1, 2.1, "e-1", (),
        ...                             {"pre_accuracy": 0.9582, "end_accuracy": 0.9582, "incidents": 1}, 30.2))
        >>> line.split("; ")[1:]
        ['detect 0.90 s, mitigate 2.10 s, recover 2.10 s', 'accuracy 0.958 -> 0.958, 1 incident [drill-real-bad-release-1, incident e-1, 30.2 s]']
    """

    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"

    verdict = "passed" if result.passed else "FAILED: " + "; ".join(result.failures)
    incident = f", incident {result.incident}" if result.incident else ""
    before, after, incidents = (result.facts.get(name) for name in ("pre_accuracy", "end_accuracy", "incidents"))
    end = f"; accuracy {before:.3f} -> {after:.3f}" if before is not None and after is not None else ""
    if incidents is not None:
        end += f"{',' if end else ';'} {incidents} incident{'' if incidents == 1 else 's'}"
    return (
        f"{result.scenario} #{result.iteration} (seed {result.seed}): {verdict}; detect {shown(result.detect_s)}, "
        f"mitigate {shown(result.mitigate_s)}, recover {shown(result.recover_s)}{end} [{result.model}{incident}, {result.wall_s:.1f} s]"
    )


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (linear), None for no values.

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([], 95)
        (2.5, None)
    """
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (position - low), 3)


def summarize(results: list[DrillResult]) -> list[dict[str, Any]]:
    """Per scenario: runs, success rate, p50 / p95 / max of detect, mitigate and recover, the end state (mean accuracy
    before and after on fresh rows, the largest drop, fewest and most incidents per episode); failures with reasons."""
    rows = []
    for name in dict.fromkeys(result.scenario for result in results):
        mine = [result for result in results if result.scenario == name]
        row: dict[str, Any] = {
            "scenario": name,
            "runs": len(mine),
            "passed": sum(r.passed for r in mine),
            "success_rate": round(sum(r.passed for r in mine) / len(mine), 3),
        }
        for measure in ("detect_s", "mitigate_s", "recover_s"):
            values = [getattr(r, measure) for r in mine if getattr(r, measure) is not None]
            row[f"{measure[:-2]}_p50_s"] = percentile(values, 50)
            row[f"{measure[:-2]}_p95_s"] = percentile(values, 95)
            row[f"{measure[:-2]}_max_s"] = max(values) if values else None
        before = [r.facts["pre_accuracy"] for r in mine if r.facts.get("pre_accuracy") is not None and r.facts.get("end_accuracy") is not None]
        after = [r.facts["end_accuracy"] for r in mine if r.facts.get("pre_accuracy") is not None and r.facts.get("end_accuracy") is not None]
        row["pre_accuracy"] = round(statistics.fmean(before), 4) if before else None
        row["end_accuracy"] = round(statistics.fmean(after), 4) if after else None
        row["accuracy_drop_max"] = round(max(b - a for b, a in zip(before, after, strict=True)), 4) if before else None
        incidents = [r.facts["incidents"] for r in mine if r.facts.get("incidents") is not None]
        row["incidents_min"], row["incidents_max"] = (min(incidents), max(incidents)) if incidents else (None, None)
        row["failures"] = "; ".join(f"#{r.iteration}: {'; '.join(r.failures)}" for r in mine if not r.passed)
        rows.append(row)
    return rows


def plot_times(results: list[DrillResult]):
    """A PNG (bytes) of the detect / mitigate / recover times per scenario, each run a dot; or None without times."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(result.scenario for result in results))
    measures = (("detect_s", "detect", "#1f77b4"), ("mitigate_s", "mitigate", "#ff7f0e"), ("recover_s", "recover", "#2ca02c"))
    if not any(getattr(r, m) is not None for r in results for m, _, _ in measures):
        return None
    figure, axes = plt.subplots(figsize=(9, 0.6 * len(names) + 1.6), dpi=100)
    for row, name in enumerate(names):
        for offset, (measure, label, colour) in zip((-0.22, 0.0, 0.22), measures, strict=True):
            values = [getattr(r, measure) for r in results if r.scenario == name and getattr(r, measure) is not None]
            axes.scatter(values, [row + offset] * len(values), s=18, color=colour, alpha=0.7, label=label if row == 0 else None)
            if values:
                axes.plot([statistics.median(values)] * 2, [row + offset - 0.09, row + offset + 0.09], color="black", linewidth=1.5)
    axes.set_yticks(range(len(names)), names)
    axes.invert_yaxis()
    axes.set_xscale("symlog", linthresh=1.0)
    axes.set_xlabel("seconds from the fault (black tick: median)")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=8, ncol=3, frameon=False)  # above the plot: never on a dot
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def write_report(results: list[DrillResult], folder: Path, stamp: str) -> tuple[Path, Path | None]:
    """The drill's JSON (every run, and the summary) and PNG under `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    report = folder / f"drill-{stamp}.json"
    report.write_text(json.dumps({"summary": summarize(results), "runs": [asdict(result) for result in results]}, indent=2, default=str))
    png = plot_times(results)
    picture = None
    if png is not None:
        picture = folder / f"drill-{stamp}.png"
        picture.write_bytes(png)
    return report, picture
