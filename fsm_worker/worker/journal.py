"""The worker's write-ahead journal: every (event, now) the core handled, in SQLite, so a restart rebuilds it.

Event sourcing: the core is deterministic (`handle(event, now) -> instructions`), so its state is the replay of
its inputs. `JournaledCore` wraps any such core from outside (it reads nothing of the core's internals):
`handle` records the event in a pending batch and hands it on; `commit()` writes the batch in one transaction
(group commit) and must run before the batch's instructions are carried out (write-ahead). `restore` replays a
journal into a fresh core with the instructions dropped. See docs/durability.md for the guarantees.

Events are serialized generically: a type tag (the class name) and the attrs fields through cattrs + orjson,
so a new event class needs no edit here as long as it is an attrs class in the events module.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import attrs
import cattrs
import orjson

from fsm_worker.protocol.worker import events as core_events

__all__ = [
    "FORMAT_VERSION",
    "EventCodec",
    "Journal",
    "JournalError",
    "JournaledCore",
    "check_journal",
]

FORMAT_VERSION = 1
#: SQLite page size of a new journal file. A commit writes each page it touched to the WAL; an event row is a
#: few hundred bytes, so 2 KiB pages make a one-event commit cheaper than 4 KiB ones (benchmarks/core.py).
PAGE_SIZE = 2048
_INSERT = "INSERT INTO events (now, wall, body) VALUES (?, ?, ?)"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    n INTEGER PRIMARY KEY,      -- order of handling
    now REAL NOT NULL,          -- the core's clock when it handled the event
    wall REAL NOT NULL,         -- wall clock (time.time) then: maps the old core clock onto a new process
    body BLOB NOT NULL          -- {"t": class name, "f": fields}
);
"""


class JournalError(Exception):
    """The journal cannot be used as it is (unreadable, another format, or written under another config)."""


class Core(Protocol):
    def handle(self, event: Any, now: float) -> list[Any]: ...
    def next_deadline(self) -> float | None: ...


class EventCodec:
    """Event ⇄ bytes: `{"t": "<ClassName>", "f": {...}}`; every attrs class of `modules` is known by its name."""

    def __init__(self, modules: Iterable[object] = (core_events,)) -> None:
        self._classes: dict[str, type] = {}
        for module in modules:
            for value in vars(module).values():
                if isinstance(value, type) and attrs.has(value):
                    self._classes[value.__name__] = value
        self._converter = cattrs.Converter()
        # `object` fields (a peer's payload) stay as parsed; a plain `object` hook would catch every class.
        self._converter.register_structure_hook_func(lambda t: t is object, lambda value, _: value)

    def encode(self, event: object) -> bytes:
        name = type(event).__name__
        if self._classes.get(name) is not type(event):
            raise JournalError(
                f"event class {type(event).__qualname__} is not an attrs class of the events module"
            )
        fields = self._converter.unstructure(event)
        return orjson.dumps({"t": name, "f": fields}, option=orjson.OPT_NON_STR_KEYS)

    def decode(self, body: bytes) -> object:
        try:
            raw = orjson.loads(body)
            cls = self._classes[raw["t"]]
            return self._converter.structure(raw["f"], cls)
        except KeyError as exc:
            raise JournalError(f"journal entry names an unknown event class {exc}") from None
        except (orjson.JSONDecodeError, TypeError, ValueError, cattrs.BaseValidationError) as exc:
            raise JournalError(f"journal entry is unreadable: {exc}") from None


class Journal:
    """One SQLite file in WAL mode; `meta` holds the format version and the fingerprint of the core's config.

    `synchronous=NORMAL` in WAL mode: a commit survives a crash of the process (SIGKILL, OOM, a panic) at no
    fsync cost; after a power loss the last commits may be missing (`durable=True` fsyncs every commit).
    """

    def __init__(
        self, path: Path, fingerprint: dict[str, Any], *, durable: bool = False, page_size: int = PAGE_SIZE
    ) -> None:
        self.path = path
        self.fingerprint = fingerprint
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA page_size={int(page_size)}")  # takes effect only in a new file
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"cannot open the journal {path}: {exc}") from None
        self._check_meta()

    def _meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def _check_meta(self) -> None:
        meta = self._meta()
        wanted = {"format": str(FORMAT_VERSION), "fingerprint": orjson.dumps(self.fingerprint).decode()}
        if meta == wanted:
            return
        if (
            not self.has_events()
        ):  # nothing to replay: a new journal, or one at rest written by another version
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM meta")
            self._db.executemany("INSERT INTO meta VALUES (?, ?)", wanted.items())
            self._db.execute("COMMIT")
            return
        if meta.get("format") != wanted["format"]:
            raise JournalError(
                f"the journal {self.path} has format {meta.get('format')!r}, this worker writes {FORMAT_VERSION}; "
                "let the old worker finish its jobs, or move the journal aside to start empty"
            )
        old = orjson.loads(meta.get("fingerprint", "{}"))
        changed = sorted(k for k in {*old, *self.fingerprint} if old.get(k) != self.fingerprint.get(k))
        raise JournalError(
            f"the journal {self.path} was written with other settings ({', '.join(changed)} changed) while jobs "
            "were held; restart with the old settings until they are done, or move the journal aside"
        )

    def has_events(self) -> bool:
        return self._db.execute("SELECT 1 FROM events LIMIT 1").fetchone() is not None

    def entries(self) -> Iterator[tuple[float, float, bytes]]:
        yield from self._db.execute("SELECT now, wall, body FROM events ORDER BY n")

    def write(self, batch: list[tuple[float, float, bytes]], *, compact: bool = False) -> None:
        """Append `batch` in one transaction; with `compact`, the journal is emptied first (the core is at rest)."""
        if len(batch) == 1 and not compact:  # in autocommit mode one statement is one transaction
            self._db.execute(_INSERT, batch[0])
            return
        self._db.execute("BEGIN")
        try:
            if compact:
                self._db.execute("DELETE FROM events")
            self._db.executemany(_INSERT, batch)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def reset(self) -> None:
        """Forget every event (after a graceful shutdown: the drained core is not one to restore)."""
        self._db.execute("DELETE FROM events")

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def _at_rest(core: Core) -> bool:
    """Nothing in the core depends on what it handled before: no deadline means no reservation, no job waiting
    for inputs, no retained result; the status must also be the starting one."""
    at_rest = getattr(core, "at_rest", None)
    if at_rest is not None:  # the coordinator answers cheaply (no status derived from the slots)
        return bool(at_rest())
    status = getattr(core, "status", None)
    return (  # the cheap tests first: most events leave the core busy
        getattr(status, "value", "available") == "available"
        and not (getattr(core, "current_job", None) or getattr(core, "draining", False))
        and core.next_deadline() is None
    )


class JournaledCore:
    """A core whose inputs are journaled; `handle` and `next_deadline` use the host's clock.

    The core itself runs on a clock carried across restarts: core time = host time + `shift`, where `shift` is
    chosen at restore so that the core's clock continues from its last event by the wall time that passed.
    """

    def __init__(
        self,
        core: Core,
        journal: Journal,
        *,
        codec: EventCodec | None = None,
        wall: Callable[[], float] = time.time,
        at_rest: Callable[[Core], bool] = _at_rest,
    ) -> None:
        self.core = core
        self.journal = journal
        self.codec = codec or EventCodec()
        self._wall = wall
        self._at_rest = at_rest
        self.shift = 0.0
        #: the last journaled `RunProgress.resume_offset` per job, as `restore` found it (for adopting runs)
        self.resume_offsets: dict[str, int] = {}
        self._batch: list[tuple[float, float, bytes]] = []
        self._rest_in_batch = -1  # index in `_batch` after which the core was at rest; -1: not in this batch

    def restore(self, host_now: float) -> int:
        """Replay the journal into the (fresh) core, instructions dropped; return how many events it held."""
        count, last_now, last_wall = 0, None, 0.0
        for now, wall, body in self.journal.entries():
            event = self.codec.decode(body)
            if isinstance(event, core_events.RunProgress) and event.resume_offset is not None:
                self.resume_offsets[event.job_id] = event.resume_offset
            self.core.handle(event, now)
            count, last_now, last_wall = count + 1, now, wall
        if last_now is not None:
            elapsed = max(0.0, self._wall() - last_wall)  # a wall clock stepped back counts as no time
            self.shift = last_now + elapsed - host_now
        return count

    def handle(self, event: Any, now: float) -> list[Any]:
        """Record `event` in the pending batch, then let the core handle it. `commit()` before acting on it."""
        core_now = now + self.shift
        self._batch.append((core_now, self._wall(), self.codec.encode(event)))
        instructions = self.core.handle(event, core_now)
        if self._at_rest(self.core):
            self._rest_in_batch = len(self._batch)
        return instructions

    def commit(self) -> None:
        """Write the pending batch in one transaction (group commit); dropping history the core no longer needs."""
        if not self._batch:
            return
        if self._rest_in_batch >= 0:
            self.journal.write(self._batch[self._rest_in_batch :], compact=True)
        else:
            self.journal.write(self._batch)
        self._batch.clear()
        self._rest_in_batch = -1

    def next_deadline(self) -> float | None:
        deadline = self.core.next_deadline()
        return None if deadline is None else deadline - self.shift

    def __getattr__(self, name: str) -> Any:  # status, current_job, … of the wrapped core
        return getattr(self.core, name)


def check_journal(path: Path) -> list[str]:
    """What is wrong with the journal at `path` (empty when it is fine): opens, integrity, format version."""
    if not path.exists():
        return []
    problems: list[str] = []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            result = db.execute("PRAGMA integrity_check").fetchone()[0]
            if result != "ok":
                problems.append(f"journal {path}: integrity_check says {result}")
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("format") != str(FORMAT_VERSION):
                problems.append(
                    f"journal {path}: format {meta.get('format')!r}, this worker reads {FORMAT_VERSION}"
                )
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        problems.append(f"journal {path}: cannot be read: {exc}")
    return problems
