"""The work pools of the local stack: names the workers, `crisis deploy` and the warm worker itself share
(a module of names only, so none of them imports another for them)."""

POOL = "crisis-pool"  # Prefect's process worker: training, validation (runs that must be killable)
WARM_POOL = "crisis-responders"  # the warm worker (type crisis-warm): the crisis flows, in threads

# A flow run on the stack's workers sends `prefect.flow-run.heartbeat` this often (PREFECT_FLOWS_HEARTBEAT_FREQUENCY;
# Prefect's minimum is 30 s). A response or emergency stop silent for STALLED_AFTER_HEARTBEATS of them is marked Crashed
# by the ladder's crisis-stalled automation, and run again by crisis-retry-response / crisis-retry-emergency.
HEARTBEAT_SECONDS = 30
STALLED_AFTER_HEARTBEATS = 3
