"""The registered versions serving has loaded, kept so a swap back costs no download: each version's estimator
from MLflow and its fitted routing (`routing.json` of its run), or why it has none. A champion promoted before
its training logged the routing gets it when it arrives (looked for up to ROUTING_WAIT_SECONDS)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prefect_crisis.core.errors import ServingError
from prefect_crisis.tasks.models import load_sklearn_model
from prefect_crisis.tasks.serving.confidence_routing import ROUTING_ARTIFACT, RoutingCalibration
from prefect_crisis.tasks.serving.routing_artifact import load_routing
from prefect_crisis.tasks.serving.served import ServedVersion

if TYPE_CHECKING:
    from prefect_crisis.blocks.registry import ModelRegistry, VersionInfo

logger = logging.getLogger("prefect_crisis.serving")

ROUTING_WAIT_SECONDS = 900.0  # how long serving looks again for the routing.json of a champion loaded without one


class LoadedVersions:
    """Versions of `registry`'s model loaded so far, by version: (estimator, routing, why none, loaded at `clock`)."""

    def __init__(self, registry: ModelRegistry, clock: Callable[[], float] = time.monotonic):
        self.registry = registry
        self.clock = clock
        self._loaded: dict[str, tuple[Any, RoutingCalibration | None, str, float]] = {}

    def __contains__(self, version: str) -> bool:
        return version in self._loaded

    def load(self, info: VersionInfo) -> ServedVersion:
        """The version `info` names, loaded once (with its routing, or why it has none).

        Raises:
            RegistryError: the model cannot be loaded. ServingError: the version has no features tag.
        """
        if info.version not in self._loaded:
            estimator = load_sklearn_model(self.registry.client, self.registry.model_name, info.version)
            try:
                routing = load_routing(self.registry.client, info.run_id)
            except ServingError as error:  # served without confidence routing, which never lowers accuracy
                routing, note = None, str(error)
            else:
                note = "" if routing is not None else f"no {ROUTING_ARTIFACT} in its run {info.run_id}"
            self._loaded[info.version] = (estimator, routing, note, self.clock())
        estimator, routing, note, _loaded_at = self._loaded[info.version]
        return ServedVersion.of(info, estimator, routing, note)

    def routing_arrived(self, info: VersionInfo) -> ServedVersion | None:
        """The served champion with its `routing.json`, when it was loaded without one and training has logged it since
        (a version can be promoted before its training fits the routing); looked for up to ROUTING_WAIT_SECONDS."""
        estimator, routing, _note, loaded_at = self._loaded[info.version]
        if routing is not None or self.clock() - loaded_at > ROUTING_WAIT_SECONDS:
            return None
        try:
            routing = load_routing(self.registry.client, info.run_id)
        except ServingError:
            return None
        if routing is None:
            return None
        self._loaded[info.version] = (estimator, routing, "", loaded_at)
        logger.info("serving %s: v%s's %s arrived after it was loaded", self.registry.model_name, info.version, ROUTING_ARTIFACT)
        return ServedVersion.of(info, estimator, routing)
