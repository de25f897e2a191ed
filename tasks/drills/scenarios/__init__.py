"""The drill scenarios, a few per module, each one value (a `Scenario`) with its own state: what it sets up,
injects, expects of the stack's response and cleans up. The catalogue of their names is
tasks/drills/catalogue.py; each module lists its values in `SCENARIOS`."""

# Every scenario module talks to the stack (tests/layer_rules.py: no domain module here).
ADAPTERS = frozenset({"batches", "escalations", "outage", "rollbacks", "serving", "training"})
