"""Prefect Block types of prefect-crisis: configuration that lives on the server.

Registered with `prefect block register -m prefect_crisis.blocks`.
"""

from prefect_crisis.blocks.contract import ColumnSpec, DataContract

__all__ = ["ColumnSpec", "DataContract"]
