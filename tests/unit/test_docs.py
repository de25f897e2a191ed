"""The docs describe the tree as it is: README.md stays short and its links
resolve, every code block is either run (tests/e2e/test_readme.py) or says why
not, the paths and modules the pages name exist, and the architecture page
names every feature package of tasks/. No server is started here."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from tests.e2e.test_readme import DOCS, PLACEHOLDER, README, REPO, doc_pages, fenced_blocks

PAGES = [README, *sorted(DOCS.glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")
RUN_LANGUAGES = {"python", "bash"}
SHOWN_LANGUAGES = {"text", "mermaid"}  # synopses, layouts, diagrams: shown, not run
REPO_PATH = re.compile(r"`(?P<path>(?:core|blocks|tasks|flows|deployments|tests|benchmarks|examples|docs)/[\w./-]*)`")
GENERATED = re.compile(r"^benchmarks/(results/|\.venv-)")  # what a benchmark writes when it runs
MODULE = re.compile(r"`(?P<name>prefect_crisis(?:\.\w+)+)")
FEATURES = sorted(path.parent.name for path in (REPO / "tasks").glob("*/__init__.py"))
SHARED = sorted(path.name for path in (REPO / "tasks").glob("*.py") if path.name != "__init__.py")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lowercase, punctuation dropped, spaces as dashes."""
    slugs = set()
    for heading in re.findall(r"^#{1,6} (.+)$", page.read_text(), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slugs.add(slug)
    return slugs


def test_readme_is_under_300_lines():
    lines = README.read_text().count("\n")
    assert lines < 300, f"README.md has {lines} lines: move the detail to a page in docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_resolves(page):
    broken = []
    for match in LINK.finditer(page.read_text()):
        target = match["target"]
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with anchor #{anchor} in {file.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_readme_links_every_docs_page():
    linked = {(README.parent / match["target"].partition("#")[0]).resolve() for match in LINK.finditer(README.read_text())}
    missing = [page.name for page in DOCS.glob("*.md") if page.name != "README.md" and page.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"


def test_the_run_order_covers_every_page():
    assert [page.resolve() for page in doc_pages()][-1] == README.resolve()
    assert {page.resolve() for page in doc_pages()} == {page.resolve() for page in PAGES}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_block_is_run_or_says_why_not(page):
    for line, language, code in fenced_blocks(page.read_text()):
        where = f"{page.name} line {line}"
        assert language in RUN_LANGUAGES | SHOWN_LANGUAGES, (
            f"{where}: a block needs a language: python or bash (run by the tests) or text / mermaid (shown)"
        )
        if language in RUN_LANGUAGES and PLACEHOLDER in code:
            reason = code.split(PLACEHOLDER, 1)[1].split("\n", 1)[0].strip()
            assert reason, f"{where}: `{PLACEHOLDER}` needs the reason the block is not run"


def test_the_pages_run_blocks():
    runnable = [
        (page, line)
        for page in PAGES
        for line, language, code in fenced_blocks(page.read_text())
        if language in RUN_LANGUAGES and PLACEHOLDER not in code
    ]
    assert len(runnable) >= 20


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_path_named_exists(page):
    missing = sorted(
        {
            match["path"]
            for match in REPO_PATH.finditer(page.read_text())
            if not GENERATED.match(match["path"]) and not (REPO / match["path"].rstrip("/")).exists()
        }
    )
    assert not missing, f"{page.name} names paths the tree does not have: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_module_named_imports(page):
    unresolved = []
    for name in sorted({match["name"] for match in MODULE.finditer(page.read_text())}):
        parts = name.split(".")
        for cut in range(len(parts), 1, -1):
            try:
                target = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for attribute in parts[cut:]:
                    target = getattr(target, attribute)
            except AttributeError:
                unresolved.append(name)
            break
        else:
            unresolved.append(name)
    assert not unresolved, f"{page.name} names what does not import: {unresolved}"


def architecture_diagram() -> str:
    text = (DOCS / "architecture.md").read_text()
    return next(code for _, language, code in fenced_blocks(text) if language == "text" and "prefect_crisis.tasks" in code)


def test_the_diagram_names_every_layer_as_installed():
    diagram = architecture_diagram()
    layers = re.findall(r"^(\w+)/\s+prefect_crisis\.(\w+)", diagram, re.MULTILINE)
    assert [folder for folder, _ in layers] == ["deployments", "flows", "tasks", "blocks", "core"]
    pyproject = (REPO / "pyproject.toml").read_text()
    for folder, package in layers:
        assert folder == package and f'"prefect_crisis.{package}" = "{folder}"' in pyproject


def test_the_diagram_names_every_feature_package_of_tasks():
    diagram = architecture_diagram()
    named = sorted(re.findall(r"^\s+\|\s+(\w+)/\s", diagram, re.MULTILINE))
    assert named == FEATURES, f"tasks/ has {FEATURES}; the diagram names {named}"
    shared = sorted(set(re.findall(r"\b(\w+\.py)\b", diagram)))
    assert shared == SHARED, f"tasks/ shares {SHARED}; the diagram names {shared}"


def test_the_architecture_page_describes_every_feature_package():
    text = (DOCS / "architecture.md").read_text()
    undescribed = [name for name in FEATURES if f"`tasks/{name}/`" not in text]
    assert not undescribed, f"docs/architecture.md does not say what these do: {undescribed}"


def test_incident_list_order_is_the_one_documented():
    from prefect_crisis.deployments.cli import incident_list

    order = re.search(r"(oldest|newest) first", incident_list.__doc__)[0]
    synopsis = next(line for line in (DOCS / "cli.md").read_text().splitlines() if line.startswith("crisis incident list"))
    assert order in synopsis
    assert f"Every incident, {order}" in README.read_text()
    other = "newest first" if order == "oldest first" else "oldest first"
    assert not any(other in line for page in PAGES for line in page.read_text().splitlines() if "incident list" in line)


def test_where_postgresql_keeps_its_data_is_documented():
    from prefect_crisis.deployments import postgres

    text = (DOCS / "operating.md").read_text()
    assert "/var/tmp/prefect-crisis-pg/" in text and "/var/tmp/prefect-crisis-pg" in Path(postgres.__file__).read_text()
    assert "`crisis down --purge`" in text


@pytest.mark.parametrize("stale", ["Not yet: the recovery drills", "drills to come", "Emitted so far"])
def test_no_stale_text(stale):
    assert not [page.name for page in PAGES if stale.lower() in page.read_text().lower()]
