"""`crisis contract infer`: learn a data contract from a reference batch, for a person to review and save."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated

import cyclopts
from rich.console import Console
from rich.table import Table

contract_app = cyclopts.App(name="contract", help="Data contracts: infer one from a reference batch.")
console = Console(highlight=False)
# Prefect's block document names, which also become the reference's file name.
BLOCK_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def _range(column) -> str:
    low, high = column.min_value, column.max_value
    if low is None and high is None:
        return ""
    if high is None:
        return f">= {low:g}"
    if low is None:
        return f"<= {high:g}"
    return f"{low:g} .. {high:g}"


def _values(column) -> str:
    values = column.allowed_values
    if values and column.dtype != "string" and len(values) > 3 and list(values) == list(range(int(values[0]), int(values[0]) + len(values))):
        return f"{values[0]:g} .. {values[-1]:g} (every integer)"
    if values:
        text = ", ".join(str(value) for value in values)
        return text if len(text) <= 40 else text[:37] + "..."
    if column.constant_value is not None:
        return f"constant {column.constant_value:g}"
    return ""


def _fences(column) -> str:
    if column.outlier_low is None and column.outlier_high is None:
        return ""
    low = "" if column.outlier_low is None else f"{column.outlier_low:.4g}"
    high = "" if column.outlier_high is None else f"{column.outlier_high:.4g}"
    return f"{low} .. {high}"


def render_contract(contract) -> Table:
    """The learned contract, one row a column, as a person reviews it."""
    table = Table(title="Inferred contract (review before saving)")
    for heading in ("column", "type", "nullable", "hard range", "tolerance bands", "values", "drift", "outliers"):
        table.add_column(heading)
    for column in contract.columns:
        table.add_row(
            column.name + (" (key)" if column.name == contract.key_column else ""),
            column.dtype,
            "yes" if column.nullable else "no",
            _range(column),
            _fences(column),
            _values(column),
            "yes" if column.check_drift else "no",
            "yes" if column.check_outliers and column.dtype in ("int", "float") else "no",
        )
    return table


@contract_app.command
def infer(
    batch: Path,
    *,
    key: Annotated[str | None, cyclopts.Parameter("--key", help="Identifier column: unique, no drift or outlier checks.")] = None,
    label: Annotated[str | None, cyclopts.Parameter("--label", help="Label column: its classes, no drift.")] = None,
    margin: Annotated[
        float | None,
        cyclopts.Parameter(
            "--margin",
            help="Also a hard range per numeric column: the reference's range widened by this share of its span "
            "[default: none; values beyond the tolerance bands are outliers].",
        ),
    ] = None,
    save: Annotated[
        str | None,
        cyclopts.Parameter("--save", help="Save the contract as this DataContract block, with the batch stored as its drift reference."),
    ] = None,
    as_json: Annotated[bool, cyclopts.Parameter("--json", help="Print the contract as JSON instead of a table.")] = False,
    home: Annotated[Path | None, cyclopts.Parameter("--home", help="State folder of the local stack [default: ./.crisis or $CRISIS_HOME].")] = None,
) -> None:
    """Infer a DataContract from a reference batch (parquet or CSV): types, nulls, tolerance bands, codes, classes, categories.

    Without --save it only prints the contract; review it, then run again with --save NAME.
    """
    from prefect_crisis.blocks import DataContract
    from prefect_crisis.core.errors import ContractError, ContractErrorReason
    from prefect_crisis.core.paths import crisis_home
    from prefect_crisis.tasks.validation.batches import load_frame

    if save is not None and not BLOCK_NAME.fullmatch(save):
        raise ContractError(
            ContractErrorReason.INVALID_NAME,
            f"--save {save!r} is not a block name: use lowercase letters, digits and dashes (e.g. churn-input)",
        )
    frame = load_frame(str(batch))
    contract = DataContract.from_reference(frame, key_column=key, label_column=label, margin=margin)
    if as_json:
        print(json.dumps(contract.model_dump(mode="json", exclude={"block_type_slug"}), indent=2))
    else:
        console.print(render_contract(contract))
    if save is None:
        if not as_json:
            console.print(f"{len(frame):,} reference rows. Review the contract, then save it: crisis contract infer {batch} --save NAME")
        return

    from prefect_crisis.deployments import stack

    folder = (home or crisis_home()).resolve() / "references"
    folder.mkdir(parents=True, exist_ok=True)
    reference = folder / f"{save}.parquet"
    partial = reference.with_suffix(".parquet.partial")
    frame.to_parquet(partial, index=False)
    os.replace(partial, reference)  # a reader never sees half a reference
    with stack.use_stack(home, request_timeout=5.0, max_retries=0):
        contract.model_copy(update={"reference_uri": str(reference)}).save(save, overwrite=True)
    console.print(f"saved DataContract block {save!r}; drift reference {reference} ({len(frame):,} rows)")
