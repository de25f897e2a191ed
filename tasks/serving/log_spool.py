"""The inference log's local spool: records kept on disk while the database is down.

JSON-lines segment files under one folder per database. Why files and not a
local SQLite file: appending a line is the cheapest durable write there is
(no locking, no journal), several serving processes can spool into the same
folder at once without "database is locked", a torn last line after a crash
costs that line and not the file, and a segment is flushed and then deleted
as a whole. Exact counts come from counting lines.

A segment is `<age>-<pid>-<id>.open` while one writer appends to it, `.jsonl`
once closed, `.flush-<pid>` while a writer flushes it. A writer that starts
takes over the `.open` and `.flush-*` segments of processes that are gone, so
records spooled before a stop are flushed after the next start.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

SEGMENT_RECORDS = 10_000
OPEN, CLOSED, FLUSHING = ".open", ".jsonl", ".flush-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _pid_of(path: Path) -> int:
    """The process that owns a segment: the appender of `.open`, the flusher of `.flush-<pid>`."""
    if FLUSHING in path.name:
        return int(path.name.rsplit(FLUSHING, 1)[1])
    return int(path.name.split("-")[1])


def _encode(row: dict) -> str:
    return json.dumps({k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}, separators=(",", ":"))


def _decode(line: str) -> dict:
    row = json.loads(line)
    for name in ("received_at", "labelled_at"):
        if isinstance(row.get(name), str):
            row[name] = datetime.fromisoformat(row[name])
    return row


class Spool:
    """A bounded on-disk queue of log records (plain dicts), oldest segment first.

    Example:
        ```python
        spool = Spool(Path("/tmp/spool"), max_records=3)
        spool.append([{"request_id": "r1"}, {"request_id": "r2"}])   # (2, 0)
        spool.append([{"request_id": "r3"}, {"request_id": "r4"}])   # (1, 1): full, one dropped
        spool.drain(lambda rows: print(len(rows)))                    # prints 3, returns (3, 0)
        ```
    """

    def __init__(self, folder: Path, max_records: int, segment_records: int = SEGMENT_RECORDS, database: str = ""):
        self.folder = Path(folder)
        self.max_records = max_records
        self.segment_records = segment_records
        self.folder.mkdir(parents=True, exist_ok=True)
        if database:  # which database these records wait for (masked: no password on disk)
            (self.folder / "database.txt").write_text(database + "\n", encoding="utf-8")
        self._open: Path | None = None
        self._open_count = 0
        self._adopt_orphans()
        self._records = sum(self._count_lines(path) for path in self.folder.iterdir() if self._is_segment(path))

    @staticmethod
    def _is_segment(path: Path) -> bool:
        return path.suffix in (OPEN, CLOSED) or FLUSHING in path.name

    def _adopt_orphans(self) -> None:
        """Close the segments of processes that stopped while appending or flushing."""
        for path in self.folder.iterdir():
            if path.suffix == OPEN or FLUSHING in path.name:
                try:
                    orphan = not _alive(_pid_of(path))
                except (ValueError, IndexError):
                    orphan = True
                if orphan:
                    path.rename(self.folder / (path.name.split(".")[0] + CLOSED))

    @staticmethod
    def _count_lines(path: Path) -> int:
        try:
            with path.open("rb") as handle:
                return sum(1 for line in handle if line.strip())
        except FileNotFoundError:
            return 0

    @property
    def records(self) -> int:
        """Records in the spool (this process's count; another process's appends are seen at its start)."""
        return self._records

    def append(self, rows: Sequence[dict]) -> tuple[int, int]:
        """Write as many of `rows` as the bound leaves room for: (spooled, dropped)."""
        room = max(self.max_records - self._records, 0)
        kept = rows[:room]
        written = 0
        while written < len(kept):
            if self._open is None or self._open_count >= self.segment_records:
                self._close_open()
                self._open = self.folder / f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{OPEN}"
                self._open_count = 0
            part = kept[written : written + self.segment_records - self._open_count]
            with self._open.open("a", encoding="utf-8") as handle:
                handle.write("".join(_encode(row) + "\n" for row in part))
            self._open_count += len(part)
            written += len(part)
        self._records += written
        return written, len(rows) - written

    def close(self) -> None:
        """Close the segment being appended to, so the next writer (in this process too) flushes it."""
        self._close_open()

    def _close_open(self) -> None:
        if self._open is not None:
            if self._open.exists():
                self._open.rename(self._open.with_suffix(CLOSED))
            self._open = None
            self._open_count = 0

    def _claim_next(self) -> Path | None:
        """The oldest closed segment, renamed so no other writer flushes it at the same time."""
        closed = sorted(path for path in self.folder.iterdir() if path.suffix == CLOSED)
        if not closed:
            self._close_open()
            closed = sorted(path for path in self.folder.iterdir() if path.suffix == CLOSED)
        for path in closed:
            claimed = path.with_name(path.stem + f"{FLUSHING}{os.getpid()}")
            try:
                path.rename(claimed)
            except FileNotFoundError:  # another writer took it first
                continue
            return claimed
        return None

    def drain(self, insert: Callable[[list[dict]], None], limit: int | None = None) -> tuple[int, int]:
        """Hand segments to `insert`, oldest first, deleting each once inserted: (flushed, unreadable lines dropped).

        Stops at `limit` records (at segment granularity) or at the first failing
        insert, whose exception propagates with that segment kept for later.
        """
        flushed = unreadable = 0
        while self._records > 0 and (limit is None or flushed < limit):
            segment = self._claim_next()
            if segment is None:
                break
            rows, bad = [], 0
            for line in segment.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                try:
                    rows.append(_decode(line))
                except ValueError:  # a line torn by a crash mid-write
                    bad += 1
            try:
                insert(rows)
            except BaseException:
                segment.rename(segment.with_name(segment.name.split(FLUSHING)[0] + CLOSED))
                raise
            segment.unlink(missing_ok=True)
            self._records = max(self._records - len(rows) - bad, 0)
            flushed += len(rows)
            unreadable += bad
        return flushed, unreadable
