"""Deployment side of prefect-crisis: the local stack and the `crisis` CLI."""
