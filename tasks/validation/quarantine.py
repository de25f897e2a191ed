"""Where a validation's rows go, and how its report reads.

Kept and quarantined rows are written as parquet (a local path or any fsspec
URL pandas can write to), so nothing validation sets aside is lost; the report
renders as the markdown a person reads. Publishing them (Prefect artifacts, the
`ml.data.validated` or `ml.data.rejected` event) is `prefect_crisis.tasks.validation.tasks`.
"""

from __future__ import annotations

import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from prefect_crisis.core.errors import DataInputError, InputErrorReason
from prefect_crisis.tasks.validation.report import ValidationReport, ValidationResult, Verdict

_MARKDOWN_FAILURES = 12


@dataclass(frozen=True)
class PersistedBatch:
    """Where the two parts of a validated batch were written."""

    kept_uri: str
    quarantine_uri: str | None


def storage_uri(root: str, *parts: str) -> str:
    """`root` joined with `parts`; local parent folders are created.

    Raises:
        DataInputError: a part is empty, `.`/`..` or holds a path separator, so
            the result would not stay under `root`.
    """
    for part in parts:
        if not part or part in {".", ".."} or "/" in part or "\\" in part:
            raise DataInputError(InputErrorReason.INVALID_NAME, f"storage path part {part!r} would leave {root!r}: use a plain name")
    if "://" in root:
        return "/".join([root.rstrip("/"), *parts])
    path = Path(root).joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path.resolve())


def _arrow_cannot_type(column: pd.Series) -> bool:
    try:
        pa.array(column, from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError):
        return True
    return False


def _as_text(value: object) -> str | None:
    """A mixed column's cell as text: strings as they are, missing values missing, anything else its repr."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value if isinstance(value, str) else repr(value)


def _to_parquet(frame: pd.DataFrame, target) -> None:
    try:
        frame.to_parquet(target, index=True)
    except (pa.ArrowException, TypeError, ValueError):
        # only the columns Arrow cannot type (text and numbers mixed), and their strings kept as they are
        mixed = [name for name in frame.columns if frame[name].dtype == object and _arrow_cannot_type(frame[name])]
        if not mixed:
            raise
        frame.assign(**{name: frame[name].map(_as_text) for name in mixed}).to_parquet(target, index=True)


def write_parquet(frame: pd.DataFrame, uri: str) -> None:
    """Write `frame` with its index; columns of mixed Python objects, which
    Arrow cannot type, are written as their text rather than not at all.

    A local file is written under a temporary name in the same folder and then
    renamed, so a reader never sees half a file and a failed write leaves the
    previous file as it was. (Object stores write whole objects anyway.)
    """
    if "://" in uri:
        _to_parquet(frame, uri)
        return
    target = Path(uri)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        _to_parquet(frame, temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def persist_parts(result: ValidationResult, storage: str, model: str, batch_id: str) -> PersistedBatch:
    """Write kept rows and, when there are any, quarantined rows with their reasons.

    The files are named by `batch_id`: validating the same batch again replaces
    them rather than adding copies; a stale quarantine file of that batch is removed.
    """
    kept_uri = storage_uri(storage, model, "kept", f"{batch_id}.parquet")
    write_parquet(result.kept, kept_uri)
    quarantine_uri = None
    if len(result.quarantined):
        quarantine_uri = storage_uri(storage, model, "quarantine", f"{batch_id}.parquet")
        write_parquet(result.quarantined, quarantine_uri)
    elif "://" not in storage:  # a clean run of the same batch: its earlier quarantine no longer applies
        Path(kept_uri).parent.parent.joinpath("quarantine", f"{batch_id}.parquet").unlink(missing_ok=True)
    return PersistedBatch(kept_uri, quarantine_uri)


def render_markdown(report: ValidationReport, model: str, batch_id: str, persisted: PersistedBatch | None) -> str:
    """The report as the markdown artifact a person reads in the Prefect UI."""
    icon = {Verdict.ACCEPT: "✅", Verdict.ACCEPT_WITH_QUARANTINE: "⚠️", Verdict.REJECT: "⛔"}[report.verdict]
    lines = [
        f"# {icon} Validation of `{model}` batch `{batch_id}`: **{report.verdict.value}**",
        "",
        "| rows | kept | quarantined | quarantine ratio | fingerprint |",
        "|---:|---:|---:|---:|---|",
        f"| {report.rows:,} | {report.kept:,} | {report.quarantined:,} | {report.quarantine_ratio:.2%} | `{report.fingerprint or '-'}` |",
        "",
    ]
    if report.rejection_reasons:
        lines += ["**Rejected because:**", *[f"- {reason}" for reason in report.rejection_reasons], ""]
    if report.failures:
        lines += ["## Failed checks", "", "| check | rows |", "|---|---:|"]
        lines += [f"| {reason} | {rows:,} |" for reason, rows in sorted(report.check_counts.items(), key=lambda item: -item[1])]
        worst = sorted(report.failures, key=lambda failure: -failure.rows)[:_MARKDOWN_FAILURES]
        lines += ["", "| check | column | rows | first rows (index) |", "|---|---|---:|---|"]
        for failure in worst:
            examples = ", ".join(str(e) for e in failure.examples)
            lines.append(f"| {failure.reason.value} | {failure.column or '(row)'} | {failure.rows:,} | {examples} |")
        if len(report.failures) > len(worst):
            lines.append(f"\n{len(report.failures) - len(worst)} more check/column pairs in the failures table artifact.")
        lines.append("")
    if report.findings:
        lines += [
            "## Findings (no row quarantined for them)",
            "",
            *[f"- `{finding.reason.value}`: {finding.message}" for finding in report.findings],
            "",
        ]
    if report.coercions:
        lines += ["## Coerced columns", "", *[f"- `{name}`: {what}" for name, what in report.coercions.items()], ""]
    if report.drift:
        lines += [
            "## Drift against the reference",
            "",
            "| feature | PSI | KS distance | KS p-value | p-value, Holm over the features | drifted |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for figures in sorted(report.drift.values(), key=lambda f: -f.psi):
            ks = "-" if figures.ks_statistic is None else f"{figures.ks_statistic:.3f}"
            pvalue = "-" if figures.ks_pvalue is None else f"{figures.ks_pvalue:.2g}"
            adjusted = "-" if figures.adjusted_pvalue is None else f"{figures.adjusted_pvalue:.2g}"
            lines.append(f"| {figures.feature} | {figures.psi:.3f} | {ks} | {pvalue} | {adjusted} | {'**yes**' if figures.drifted else 'no'} |")
        lines.append("")
    if persisted is not None:
        lines += ["## Where the rows went", "", f"- kept: `{persisted.kept_uri}`"]
        if persisted.quarantine_uri:
            lines.append(f"- quarantined (with a `quarantine_reasons` column): `{persisted.quarantine_uri}`")
    return "\n".join(lines)
