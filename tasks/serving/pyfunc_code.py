"""The serving wrapper as MLflow "model from code": MLflow copies this file into
the registered model and runs it at load time, so the wrapper is defined by
importable code, not by a pickle of an object."""

from mlflow.models import set_model

from prefect_crisis.tasks.serving.pyfunc import CrisisModel

set_model(CrisisModel())
