"""The import rules of the project, checked on source text (never by importing it).

Every way one module can reach another counts: `import a.b`, `from a.b import c`,
relative imports, `from prefect_crisis import tasks`, a `from package import name`
that a package's lazy `_EXPORTS` table resolves to a submodule, and a module named in
a string (`importlib.import_module("prefect_crisis.flows.demo")`, a lazy export
table). Imports inside functions count as much as those at the top; only imports
under `if TYPE_CHECKING:` are left out, as they never run.

The rules:
- layers import one way: core <- blocks <- tasks <- flows <- deployments;
- no import cycles between modules (a package's `__init__` naming its own
  submodules for re-export is not an edge);
- in a feature package of tasks/ that declares `ADAPTERS`, every other module is
  domain: nothing it imports at run time, directly or through other modules of
  the project, imports Prefect or MLflow.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT_PACKAGE = "prefect_crisis"
LAYERS = ("core", "blocks", "tasks", "flows", "deployments")
FRAMEWORKS = ("prefect", "mlflow")
_MODULE_STRING = re.compile(rf"^{ROOT_PACKAGE}\.(?:{'|'.join(LAYERS)})(?:\.\w+)*$")


@dataclass(frozen=True)
class Import:
    line: int
    target: str  # an absolute module name: prefect_crisis.x.y, or a third-party one
    how: str  # "import", "from", "relative", "string"


@dataclass
class Module:
    name: str
    is_package: bool
    tree: ast.Module
    imports: list[Import] = field(default_factory=list)
    exports: dict[str, str] = field(default_factory=dict)  # lazy _EXPORTS: name -> module
    adapters: frozenset[str] | None = None

    @property
    def layer(self) -> str:
        return self.name.split(".")[1]

    @property
    def package(self) -> str:
        return self.name if self.is_package else self.name.rpartition(".")[0]


def modules_of_tree(root: Path) -> dict[str, str]:
    """`{module name: source}` for every module of the layers under `root`."""
    sources = {}
    for layer in LAYERS:
        for path in sorted((root / layer).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join((ROOT_PACKAGE, *parts))
            sources[name.removesuffix(".__init__") if parts[-1] == "__init__" else name] = path.read_text()
    return sources


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node of `tree` except the bodies of `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve_relative(module: Module, level: int, name: str | None) -> str:
    base = module.package.split(".")
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _literal_exports(tree: ast.Module, package: str) -> tuple[dict[str, str], frozenset[str] | None]:
    exports: dict[str, str] = {}
    adapters = None
    for node in tree.body:
        if not isinstance(node, (ast.Assign, ast.AnnAssign)):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = {target.id for target in targets if isinstance(target, ast.Name)}
        if "_EXPORTS" in names and isinstance(node.value, ast.Dict):
            for key, value in zip(node.value.keys, node.value.values, strict=True):
                if isinstance(key, ast.Constant) and isinstance(value, ast.Constant):
                    where = value.value
                    exports[key.value] = where if "." in where else f"{package}.{where}"
        if "ADAPTERS" in names:
            adapters = frozenset(node_.value for node_ in ast.walk(node.value) if isinstance(node_, ast.Constant) and isinstance(node_.value, str))
    return exports, adapters


def parse(sources: Mapping[str, str]) -> dict[str, Module]:
    modules = {}
    for name, source in sources.items():
        is_package = any(other.startswith(name + ".") for other in sources)
        tree = ast.parse(source, name)
        module = Module(name, is_package, tree)
        module.exports, module.adapters = _literal_exports(tree, name)
        modules[name] = module
    for module in modules.values():
        module.imports = _imports_of(module, modules)
    return modules


def _imports_of(module: Module, modules: Mapping[str, Module]) -> list[Import]:
    found = []
    for node in _runtime_nodes(module.tree):
        if isinstance(node, ast.Import):
            found += [Import(node.lineno, alias.name, "import") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            how = "relative" if node.level else "from"
            base = _resolve_relative(module, node.level, node.module) if node.level else (node.module or "")
            for alias in node.names:
                found.append(Import(node.lineno, _from_target(base, alias.name, modules), how))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.match(node.value):
            found.append(Import(node.lineno, node.value, "string"))
        elif isinstance(node, ast.Call):
            # importlib.import_module("...", package) with a relative name
            if (
                isinstance(node.func, (ast.Attribute, ast.Name))
                and getattr(node.func, "attr", getattr(node.func, "id", "")) in {"import_module", "__import__"}
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and not _MODULE_STRING.match(node.args[0].value)
            ):
                found.append(Import(node.lineno, node.args[0].value, "string"))
    return found


def _from_target(base: str, name: str, modules: Mapping[str, Module]) -> str:
    """What `from base import name` reaches: a submodule, a lazily exported name's module, or `base`."""
    if f"{base}.{name}" in modules:
        return f"{base}.{name}"
    package = modules.get(base)
    if package is not None and name in package.exports:
        return package.exports[name]
    return base


def layer_of(target: str) -> str | None:
    parts = target.split(".")
    if parts[0] == ROOT_PACKAGE and len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return None


def upward_imports(modules: Mapping[str, Module]) -> list[str]:
    wrong = []
    for module in modules.values():
        own = LAYERS.index(module.layer)
        for found in module.imports:
            if found.target.split(".")[0] in LAYERS:
                wrong.append(f"{module.name} line {found.line}: bare `{found.target}` (import through {ROOT_PACKAGE}.*)")
            layer = layer_of(found.target)
            if layer is not None and LAYERS.index(layer) > own:
                wrong.append(f"{module.name} line {found.line}: {found.how} import of {found.target}, above {module.layer}")
    return wrong


def _known(target: str, modules: Mapping[str, Module]) -> str | None:
    while target not in modules and "." in target:
        target = target.rpartition(".")[0]
    return target if target in modules else None


def _edges(modules: Mapping[str, Module]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for module in modules.values():
        for found in module.imports:
            target = found.target
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]
            if target not in modules or target == module.name:
                continue
            if module.is_package and target.startswith(module.name + "."):
                continue  # a package naming its own parts for re-export
            edges[module.name].add(target)
    return edges


def import_cycles(modules: Mapping[str, Module]) -> list[list[str]]:
    """Each strongly connected group of two or more modules (Tarjan's algorithm)."""
    edges = _edges(modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(edges[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def framework_path(start: str, modules: Mapping[str, Module]) -> list[str] | None:
    """The chain of imports by which running `start` imports Prefect or MLflow, if any.
    Importing a module runs its parent packages' `__init__` too (their own code, not
    the submodules they name for re-export)."""
    seen = {start}
    queue: list[list[str]] = [[start]]
    while queue:
        chain = queue.pop(0)
        here = modules[chain[-1]]
        # A package's lazy export table names modules that load only when a name is read,
        # and a `from package import name` is already resolved to the module defining it.
        runs = [found for found in here.imports if not (here.is_package and found.how == "string")]
        for found in runs:
            if found.target.split(".")[0] in FRAMEWORKS:
                return [*chain, found.target]
        reached = {_known(found.target, modules) for found in runs} - {None, here.name}
        reached |= {parent for parent in _parents(here.name) if parent in modules}
        if here.is_package:
            reached = {name for name in reached if not name.startswith(here.name + ".")}
        for name in sorted(reached):
            for step in [*_parents(name), name]:
                if step in modules and step not in seen:
                    seen.add(step)
                    queue.append([*chain, step])
    return None


def domain_modules(modules: Mapping[str, Module]) -> dict[str, list[str]]:
    """`{feature package: its domain modules}` for every package that declares ADAPTERS."""
    found = {}
    for package in modules.values():
        if package.adapters is None:
            continue
        members = [name for name in modules if name.rpartition(".")[0] == package.name and name.rpartition(".")[2] not in package.adapters]
        found[package.name] = sorted(members)
    return found


def impure_domain_modules(modules: Mapping[str, Module]) -> list[str]:
    wrong = []
    for members in domain_modules(modules).values():
        for name in members:
            chain = framework_path(name, modules)
            if chain is not None:
                wrong.append(f"{name} imports {chain[-1]}: " + " -> ".join(chain))
    return wrong
