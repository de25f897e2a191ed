"""Real public data sets the loop is proven on, bundled with scikit-learn (no network).

Synthetic Gaussians hid every wrong decision the loop made on real models, so the
tests, the drills and the benchmarks run on these three shapes as well:

| name | classes | rows | features | shape |
|---|---|---|---|---|
| breast-cancer | 2 | 569 | 30 | continuous, skewed, on scales from 1e-3 to 1e3 |
| digits | 10 | 1,797 | 64 | discrete (0..16), several constant columns |
| wine | 3 | 178 | 13 | continuous on very different scales, a small set |

Each is a DataFrame of identifier-safe feature names and an integer `label`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from prefect_crisis.core.errors import DataInputError, InputErrorReason

LABEL = "label"


@dataclass(frozen=True)
class RealDataset:
    """One real data set: its frame (features and `label`), its feature names and what it is."""

    name: str
    frame: pd.DataFrame
    features: tuple[str, ...]
    description: str

    @property
    def classes(self) -> np.ndarray:
        return np.sort(self.frame[LABEL].unique())

    def split(self, *, seed: int = 0, parts: tuple[float, ...] = (0.5, 0.5)) -> list[pd.DataFrame]:
        """The rows shuffled by `seed` and cut into consecutive parts of the given shares, stratified by label
        (each part holds every class in about its share), each with a fresh index.

        Example:
            >>> train, stream = load_dataset("wine").split(seed=1, parts=(0.6, 0.4))
            >>> len(train) + len(stream), sorted(train["label"].unique())
            (178, [0, 1, 2])
        """
        if not parts or any(share <= 0 for share in parts) or abs(sum(parts) - 1.0) > 1e-9:
            raise ValueError(f"parts must be positive shares summing to 1, got {parts}")
        rng = np.random.default_rng(seed)
        pieces: list[list[pd.DataFrame]] = [[] for _ in parts]
        bounds = np.cumsum((0.0, *parts))
        for _, group in self.frame.groupby(LABEL, sort=True):
            order = group.iloc[rng.permutation(len(group))]
            cuts = np.round(bounds * len(order)).astype(int)
            for index, (start, stop) in enumerate(itertools.pairwise(cuts)):
                pieces[index].append(order.iloc[start:stop])
        return [pd.concat(piece).sample(frac=1.0, random_state=seed + index).reset_index(drop=True) for index, piece in enumerate(pieces)]


def _identifier(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", str(name)).strip("_").lower()


def _from_sklearn(name: str, loader: Callable, description: str) -> RealDataset:
    bunch = loader(as_frame=True)
    features = bunch.data.rename(columns=_identifier)
    if name == "digits":  # pixel intensities are counts 0..16: integers, as the data is
        features = features.astype(np.int64)
    frame = features.assign(**{LABEL: bunch.target.astype(np.int64).to_numpy()})
    return RealDataset(name, frame, tuple(features.columns), description)


def _loaders() -> dict[str, tuple[Callable, str]]:
    from sklearn import datasets

    return {
        "breast-cancer": (datasets.load_breast_cancer, "binary; 30 continuous, skewed features on scales from 1e-3 to 1e3; 569 rows"),
        "digits": (datasets.load_digits, "10 classes; 64 discrete pixel counts 0..16, several constant; 1,797 rows"),
        "wine": (datasets.load_wine, "3 classes; 13 continuous features on very different scales; 178 rows"),
    }


DATASET_NAMES = ("breast-cancer", "digits", "wine")


def load_dataset(name: str) -> RealDataset:
    """A real data set by name (see the module's table).

    Raises:
        DataInputError: an unknown name (one line listing the known ones).

    Example:
        >>> data = load_dataset("digits")
        >>> data.frame.shape, len(data.classes)
        ((1797, 65), 10)
    """
    loaders = _loaders()
    if name not in loaders:
        raise DataInputError(InputErrorReason.MISSING_SOURCE, f"unknown data set {name!r}: use one of {', '.join(DATASET_NAMES)}")
    loader, description = loaders[name]
    return _from_sklearn(name, loader, description)
