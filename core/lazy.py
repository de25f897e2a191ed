"""Package exports imported on first use (PEP 562).

A flow-run process that needs one step should not pay for every step's dependencies
(skops, scipy, matplotlib) before its first line runs, so a package's `__init__` names
what it exports and where each name lives, and imports a module only when one of its
names is first read.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """The `__getattr__`, `__dir__` and `__all__` of `package`, exporting `exports`
    (a name -> the module that defines it, relative to `package` or absolute).

    Example:
        >>> getattr_, dir_, all_ = lazy_exports("prefect_crisis.tasks.serving", {"CircuitBreaker": "breaker"})
        >>> getattr_("CircuitBreaker").__name__
        'CircuitBreaker'
    """
    targets = {name: module if "." in module else f"{package}.{module}" for name, module in exports.items()}

    def __getattr__(name: str) -> Any:
        module = targets.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        vars(importlib.import_module(package))[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(importlib.import_module(package))) | set(targets))

    return __getattr__, __dir__, sorted(targets)


class _MovedModule(importlib.abc.Loader):
    """Loads an old module name as a stand-in for the module it moved to, warning once per process.

    A name the old module defined is read from the new module, or, where the split sent it to
    a sibling, from the new module's package (which exports every public name of its parts).
    """

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {self.target}; import it from there (the old name goes in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return _StandIn(spec.name, self.target)

    def exec_module(self, module: ModuleType) -> None:
        return None


class _StandIn(ModuleType):
    def __init__(self, name: str, target: str) -> None:
        super().__init__(name, f"moved to {target}")
        self._target = target

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        target = importlib.import_module(self._target)
        if hasattr(target, name):
            return getattr(target, name)
        package = importlib.import_module(self._target.rpartition(".")[0])
        try:
            return getattr(package, name)
        except AttributeError:
            raise AttributeError(f"module {self.__name__!r} (moved to {self._target}) has no attribute {name!r}") from None

    def __dir__(self) -> list[str]:
        target = importlib.import_module(self._target)
        package = importlib.import_module(self._target.rpartition(".")[0])
        return sorted(set(dir(target)) | set(getattr(package, "__all__", ())))


class MovedModules(importlib.abc.MetaPathFinder):
    """Old module names that keep working for one release: `import old` gives a stand-in that
    reads every name from the module's new place, with a `DeprecationWarning`."""

    def __init__(self, moved: Mapping[str, str]) -> None:
        self.moved = dict(moved)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        new = self.moved.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _MovedModule(new))

    def install(self) -> None:
        if not any(isinstance(finder, MovedModules) and finder.moved == self.moved for finder in sys.meta_path):
            sys.meta_path.append(self)
