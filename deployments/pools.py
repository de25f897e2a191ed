"""The work pools of the local stack: names the workers, `crisis deploy` and the warm worker itself share
(a module of names only, so none of them imports another for them)."""

POOL = "crisis-pool"  # Prefect's process worker: training, validation (runs that must be killable)
WARM_POOL = "crisis-responders"  # the warm worker (type crisis-warm): the crisis flows, in threads
