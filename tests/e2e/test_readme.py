"""Every ```python and ```bash block of docs/*.md and README.md runs as written,
in order, in a fresh folder holding the repository's examples/ and a .venv link,
against a stack this test starts: each block in a fresh process with a newcomer's
environment (no PREFECT_API_URL, MLFLOW_TRACKING_URI or CRISIS_HOME), so a
sample that relies on an earlier block's shell state fails here too.

The order: the docs pages as docs/README.md lists them (their samples build on
each other: the contract validation.md saves, training.md trains on), then the
README's tour last: it starts the workers, deploys the ladder, drills and ends
with `crisis down`, which would leave the pages' samples without a stack.

A block that is not run says `# placeholder:` and why on that line (a value of
yours, a fresh clone, a command that takes too long); it is skipped, counted and
listed. Other blocks are ```text or ```mermaid: shown, never code
(tests/unit/test_docs.py checks every block has one of these languages).
Processes a block leaves in the background (a worker, `crisis serve`) are ended
with the block's group.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.e2e.test_stack import free_port

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
PLACEHOLDER = "# placeholder:"
BLOCK_TIMEOUT = float(os.environ.get("README_BLOCK_TIMEOUT", 600))  # seconds one block may take (the demo's story)
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\n(?P<body>.*?)^(?P=indent)```", re.MULTILINE | re.DOTALL)
RUN = ("python", "bash")


def end_group(group: int, grace: float = 15.0) -> None:
    """SIGTERM to a block's process group (a background worker included), SIGKILL after `grace` seconds."""
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


def fenced_blocks(text: str) -> list[tuple[int, str, str]]:
    """(line, language, code) of every fenced block, dedented, in order ("" for a block without a language)."""
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        blocks.append((line, match["lang"], textwrap.dedent(match["body"])))
    return blocks


def readme_blocks(text: str) -> list[tuple[int, str, str]]:
    """(line, language, code) of each python/bash block, dedented, in order."""
    return [block for block in fenced_blocks(text) if block[1] in RUN]


def doc_pages() -> list[Path]:
    """The pages in the order their blocks run: docs/ as docs/README.md links them, then README.md."""
    index = DOCS / "README.md"
    linked = re.findall(r"\]\((\w[\w-]*\.md)\)", index.read_text())
    return [DOCS / name for name in dict.fromkeys(linked)] + [index, README]


def newcomer_env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "CRISIS_"))}
    env.update(PREFECT_HOME=str(folder / ".prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false", COLUMNS="200")
    return env


def test_readme_blocks_are_found():
    blocks = [block for page in doc_pages() for block in readme_blocks(page.read_text())]
    assert len(blocks) >= 20
    assert any(PLACEHOLDER in code for _, _, code in blocks)


@pytest.mark.timeout(3000)
def test_every_readme_block_runs_as_written(tmp_path):
    folder = tmp_path / "newcomer"
    folder.mkdir()
    shutil.copytree(REPO / "examples", folder / "examples")
    (folder / ".venv").symlink_to(Path(sys.prefix))
    env = newcomer_env(folder)
    crisis = str(folder / ".venv" / "bin" / "crisis")
    up = subprocess.run([crisis, "up", "--port", str(free_port())], cwd=folder, env=env, capture_output=True, text=True, timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr
    groups: list[int] = []
    ran, skipped = [], []
    started = time.monotonic()
    try:
        for page, line, lang, code in [(doc, *block) for doc in doc_pages() for block in readme_blocks(doc.read_text())]:
            where = f"{page.relative_to(REPO)} line {line}"
            if PLACEHOLDER in code:
                skipped.append(where)
                continue
            command = [str(folder / ".venv" / "bin" / "python"), "-"] if lang == "python" else ["bash", "-e", "-o", "pipefail", "-s"]
            log_path = tmp_path / f"block-{page.stem}-{line}.log"
            # output to a file, not a pipe: a process the block leaves in the background keeps its pipes open
            with open(log_path, "w") as log:
                process = subprocess.Popen(
                    command, cwd=folder, env=env, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True
                )
                groups.append(process.pid)
                process.stdin.write(code)
                process.stdin.close()
                try:
                    process.wait(timeout=BLOCK_TIMEOUT)
                except subprocess.TimeoutExpired:
                    end_group(process.pid, grace=5)
                    pytest.fail(f"{where} ({lang}) did not finish within {BLOCK_TIMEOUT}s:\n{log_path.read_text()[-3000:]}")
            output = log_path.read_text()
            assert process.returncode == 0, f"{where} ({lang}) exited {process.returncode}:\n{code}\n---\n{output[-4000:]}"
            if lang == "python" and "prefect_crisis" in code:
                # no exports in this process: it found the stack through .crisis/server.json
                assert "using the local stack" in output, f"{where} did not connect to the stack:\n{output[-2000:]}"
            ran.append(where)
            print(f"{where} ({lang}): ok after {time.monotonic() - started:.0f}s", flush=True)
    finally:
        for group in groups:
            end_group(group)
        subprocess.run([crisis, "down"], cwd=folder, env=env, capture_output=True, text=True, timeout=60)
    print(f"\ndocs: {len(ran)} blocks ran in {time.monotonic() - started:.0f}s, {len(skipped)} placeholders skipped ({skipped})")
    assert len(ran) >= 20
