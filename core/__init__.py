"""The base of prefect-crisis: plain values and functions that import nothing
else of the project, so blocks, tasks, flows and deployments can all use them."""
