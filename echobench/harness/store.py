"""The results store: one directory per cell, every file written atomically, every file validated on load.

Layout of an output directory:

    OUT/suite.json                 which suite owns the directory, and the experiments it contains
    OUT/cells/<run_id>/config.json the cell's canonical spec and the environment that ran it
    OUT/cells/<run_id>/result.json metrics, per-epoch curves, timings, and the config they were computed
                                   with (present and valid = finished)
    OUT/cells/<run_id>/error.json  the error and traceback of a failed attempt
    OUT/cells/<run_id>/damaged-<UTC time>/  files of the cell that failed validation, kept for inspection
    OUT/cells/<run_id>/.lock       held (flock) by the runner computing the cell
    OUT/commands/<time>-<pid>.json each `echobench run` here: command line, suite, device, cell counts

Writes. A file is written to a temporary name in the same directory, flushed, fsynced and then renamed
over the target (`echobench.files`), so a reader (or a runner killed with SIGKILL) never sees half a
file. The per-cell lock is an advisory `flock`: the kernel drops it when its process dies, so a cell
whose runner was killed is free again, and two runners on one directory never compute the same cell.

Configuration and result are replaced together. `result.json` embeds the configuration it was
computed with, and a reader takes a finished cell's configuration from there; `config.json` is written
before computing only while the cell has no result (so that a running or failed cell says what it
is), and again after the result as a copy for people. The rename of `result.json` is therefore the
one commit point: a `--force` recompute keeps the old result and its configuration until the new
result replaces both at once; a failed or killed one leaves them untouched (a failure adds
`error.json`).

Validation. `load_cell` checks every file it reads against the schema below; a cell whose files fail
(garbage or truncated JSON, a result without a configuration, missing fields) is *damaged*: it never
counts as finished, `report` names it and tabulates the rest, and the next `run` moves its files into
`damaged-<time>/` under the cell's lock and computes it again. A file that cannot be read for an
operating-system reason (permissions) is not damage: that is an `EchobenchError` naming the file.
A file system that refuses a write (read-only, full) gives an `EchobenchError` naming the file; the
cell keeps its previous files.

Schema. `SCHEMA` is written as "schema" into suite.json, config.json and result.json. Schema 1 is
the layout before the field existed (every directory committed under reports/): config.json written
before computing, result.json without its configuration, suite.json naming the suite only (so the
cells the suite contains are not recorded until the next `run` claims the directory). It is read as
it is. A schema newer than this code reads is refused with a message, never guessed at.

Identity. A cell's *experiment* (`experiment_key`) is its resolved configuration without the seed: the
unit a report row averages over. `claim` records the experiments of the suite that claims the
directory, so that cells of an edited suite that it no longer contains can be told apart (stale),
whatever `--seeds` a run used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from echobench.errors import EchobenchError
from echobench.files import atomic_create_json, atomic_write_bytes, atomic_write_json, read_json

COMMANDS_DIR = "commands"  # OUT/commands/<UTC time>-<pid>.json: one file per `echobench run`, never rewritten
SCHEMA = 2  # of suite.json, config.json and result.json; 1 = written before the field existed
CELL_KINDS = ("train", "selection", "runtime")
# What `run`/`report` write at the top of a results directory: a folder without suite.json that holds
# only these, cells/ or commands/ among them, is taken for a results directory whose suite.json was
# lost; any other non-empty folder is the user's.
OWN_NAMES = {"suite.json", "cells", COMMANDS_DIR, "index.md", "report.md", "report.tex", "report.csv", "report.json",
             "runtime.md", "runtime.json"}
_SEEDLESS = {"train": ("seed",), "selection": ("seed",), "runtime": ("device_name",)}


def experiment_key(kind: str, spec: dict) -> str:
    """The identity of a cell's experiment: its kind and spec without the seed (for a runtime cell,
    without the name of the device it was measured on). Cells of one experiment are the seeds of one row."""
    ident = {k: v for k, v in spec.items() if k not in _SEEDLESS.get(kind, ())}
    canonical = json.dumps({"kind": kind, "spec": ident}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class Damaged(Exception):
    """A file of the store failed validation (internal: turned into a cell's `problem`)."""


def _schema(doc: dict, path: Path) -> int:
    schema = doc.get("schema", 1)
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
        raise Damaged(f"{path.name}: schema {schema!r} is not a schema number")
    if schema > SCHEMA:
        raise EchobenchError(f"{path} was written by a newer echobench (results schema {schema}; this one reads "
                             f"schemas 1 to {SCHEMA}): upgrade echobench to read it (nothing was changed)")
    return schema


def _load(path: Path) -> dict:
    """A JSON object from `path`: Damaged if it is not one, EchobenchError if it cannot be read."""
    try:
        data = read_json(path)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise Damaged(f"{path.name} is not valid JSON ({exc})") from None
    except IsADirectoryError:
        raise Damaged(f"{path.name} is a folder") from None
    except OSError as exc:
        raise EchobenchError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise Damaged(f"{path.name} holds {type(data).__name__}, not an object")
    _schema(data, path)
    return data


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require(doc: dict, what: str, checks: dict[str, Any]) -> None:
    for key, check in checks.items():
        if key not in doc:
            raise Damaged(f"{what} has no {key!r}")
        if not check(doc[key]):
            raise Damaged(f"{what}: {key!r} is {doc[key]!r}")


_SPEC_FIELDS = {  # what the reports read from a finished cell's spec
    "train": {"dataset": lambda v: isinstance(v, str), "method": lambda v: isinstance(v, str),
              "noise": lambda v: isinstance(v, str), "seed": lambda v: isinstance(v, int)},
    "selection": {"dataset": lambda v: isinstance(v, str), "noise": lambda v: isinstance(v, str),
                  "seed": lambda v: isinstance(v, int), "precisions": lambda v: isinstance(v, list)},
    "runtime": {"config": lambda v: isinstance(v, str), "resolution": lambda v: isinstance(v, int),
                "batch_size": lambda v: isinstance(v, int), "steps": lambda v: isinstance(v, int)},
}
_RESULT_FIELDS = {  # what the reports read from a finished cell's result
    "train": {"metrics": lambda m: isinstance(m, dict) and all(
        _number(m.get(k)) for k in ("test_acc_best_val", "test_acc_last", "test_acc_oracle"))},
    "selection": {"echoselect": lambda e: isinstance(e, dict) and _number(e.get("n")),
                  "table4": lambda t: isinstance(t, dict)},
    "runtime": {"measurements": lambda m: isinstance(m, list) and all(isinstance(r, dict) for r in m)},
}


def check_config(config: dict, run_id: str, finished: bool) -> str:
    """The cell's kind, or Damaged. A finished cell's spec must hold what the reports read."""
    if config.get("run_id", run_id) != run_id:
        raise Damaged(f"the configuration is that of cell {config.get('run_id')!r}")
    kind = config.get("kind", "train")
    spec = config.get("spec")
    if not isinstance(kind, str) or not isinstance(spec, dict):
        raise Damaged("the configuration has no spec")
    if finished and kind in _SPEC_FIELDS:
        _require(spec, "the spec", _SPEC_FIELDS[kind])
    return kind


@dataclass
class Cell:
    """One cell folder as read from disk. `problem` says why it is damaged (None: sound); `config` is
    the configuration of its result when it has one; `moved_aside` lists its damaged-* folders."""

    run_id: str
    config: dict | None = None
    result: dict | None = None
    error: dict | None = None
    problem: str | None = None
    moved_aside: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.result is not None and self.problem is None

    @property
    def kind(self) -> str:
        return (self.config or {}).get("kind", "train")


@contextlib.contextmanager
def writing(what: str) -> Iterator[None]:
    """Turn an operating-system refusal to write (read-only, full disk, a file in the way) into one line."""
    try:
        yield
    except OSError as exc:
        raise EchobenchError(f"cannot write {exc.filename or what}: {exc.strerror or exc} (files already "
                             f"there are left as they were)") from None


class Store:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.cells = self.root / "cells"
        self.marker = self.root / "suite.json"

    # --- ownership -------------------------------------------------------------------------------
    def suite_record(self) -> dict | None:
        """suite.json, validated: {"suite": name, "schema": n, "experiments": [...] (schema 2)}; None if absent."""
        if not self.marker.exists():
            return None
        try:
            record = _load(self.marker)
            if not isinstance(record.get("suite"), str) or not record["suite"]:
                raise Damaged("suite.json names no suite")
            experiments = record.get("experiments")
            if experiments is not None and not (isinstance(experiments, list)
                                                and all(isinstance(e, str) for e in experiments)):
                raise Damaged("suite.json: `experiments` is not a list of keys")
        except Damaged as exc:
            raise EchobenchError(f"{self.marker} is damaged ({exc}); if {self.root} is an echobench results "
                                 f"directory, move suite.json aside and re-run the suite that owns it") from None
        return record

    def claim(self, suite_name: str, experiments: list[str] | None = None) -> None:
        """Mark the directory as `suite_name`'s, refusing one that holds another suite's results or
        anything that is not echobench's. `experiments` (the `experiment_key`s of the suite's cells) are
        recorded as the directory's current suite. Creating suite.json is atomic: of two suites racing
        for one new directory, exactly one wins."""
        if self.root.exists() and not self.root.is_dir():
            raise EchobenchError(f"output path {self.root} exists and is not a directory; choose another --out")
        record = {"schema": SCHEMA, "suite": suite_name}
        if experiments is not None:
            record["experiments"] = sorted(set(experiments))
        for _ in range(2):
            current = self.suite_record()
            if current is not None:
                if current["suite"] != suite_name:
                    raise EchobenchError(f"{self.root} holds results of suite {current['suite']!r}, not {suite_name!r}; "
                                         f"pass another --out directory (nothing was changed)")
                if experiments is not None and (current.get("experiments") != record["experiments"]
                                                or current.get("schema", 1) != SCHEMA):
                    with writing(f"to {self.root}"):  # the suite was edited (or an older schema): record it
                        atomic_write_json(self.marker, record)
                return
            if self.root.is_dir():
                try:
                    names = {n for n in os.listdir(self.root)
                             if not (n.startswith(".suite.json.") and n.endswith(".tmp"))}  # a racing claim's
                except OSError as exc:
                    raise EchobenchError(f"cannot read --out {self.root}: {exc.strerror or exc}") from None
                foreign = sorted(names - OWN_NAMES) or (sorted(names) if names and not names & {"cells", COMMANDS_DIR}
                                                        else [])
                if foreign:
                    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
                    raise EchobenchError(f"{self.root} is not empty and is not an echobench results directory (it holds "
                                         f"{shown}); pass a new or empty --out directory (nothing was changed)")
            with writing(f"to {self.root}"):
                if atomic_create_json(self.marker, record):
                    return
            # another process created suite.json meanwhile: check whose it is
        raise EchobenchError(f"could not claim {self.root}: suite.json keeps changing; is another run starting there?")

    def owner(self) -> str | None:
        record = self.suite_record()
        return record["suite"] if record else None

    def check_layout(self, run_ids: list[str] = ()) -> None:
        """Before any expensive work: cells/ and commands/ are folders this process can write into, no
        file sits where one of `run_ids`' cell folders should be, and their files are readable and of a
        schema this code reads."""
        for name in ("cells", COMMANDS_DIR):
            folder = self.root / name
            if folder.exists() and not folder.is_dir():
                raise EchobenchError(f"{folder} is a file, not a folder: echobench keeps its {name} there; move it "
                                     f"away and re-run (nothing was changed)")
            with writing(f"to {self.root}"):
                folder.mkdir(parents=True, exist_ok=True)
                probe = folder / f".probe.{os.getpid()}.tmp"
                try:
                    atomic_write_bytes(probe, b"")
                finally:
                    with contextlib.suppress(OSError):
                        probe.unlink()
        for rid in run_ids:
            path = self.cell_dir(rid)
            if path.exists() and not path.is_dir():
                raise EchobenchError(f"{path} is a file where the folder of cell {rid} should be; move it away "
                                     f"and re-run (nothing was changed)")
            self.load_cell(rid)  # raises for a newer schema or an unreadable file; damage is repaired later

    # --- cells -----------------------------------------------------------------------------------
    def cell_dir(self, run_id: str) -> Path:
        return self.cells / run_id

    def load_cell(self, run_id: str) -> Cell:
        """The cell's files, validated (see the module docstring)."""
        d = self.cell_dir(run_id)
        cell = Cell(run_id)
        if not d.is_dir():
            if d.exists():
                cell.problem = "a file where the cell's folder should be"
            return cell
        cell.moved_aside = sorted(p.name for p in d.glob("damaged-*"))
        config_path, result_path, error_path = d / "config.json", d / "result.json", d / "error.json"
        try:
            if result_path.exists():
                cell.result = _load(result_path)
                if cell.result.get("run_id", run_id) != run_id:
                    raise Damaged(f"result.json is that of cell {cell.result.get('run_id')!r}")
                embedded = cell.result.get("config")
                if embedded is not None:
                    if not isinstance(embedded, dict):
                        raise Damaged("result.json: its configuration is not an object")
                    cell.config = embedded
                elif cell.result.get("schema", 1) >= 2:
                    raise Damaged("result.json carries no configuration")
                elif not config_path.exists():
                    raise Damaged("result.json without config.json (cannot tell what was computed)")
            if cell.config is None and config_path.exists():
                cell.config = _load(config_path)
            if cell.config is not None:
                kind = check_config(cell.config, run_id, finished=cell.result is not None)
                if cell.result is not None and kind in _RESULT_FIELDS:
                    _require(cell.result, "result.json", _RESULT_FIELDS[kind])
        except Damaged as exc:
            cell.problem = str(exc)
        if error_path.exists():
            try:
                cell.error = _load(error_path)
            except Damaged as exc:
                cell.error = {"error": f"(error.json is damaged: {exc})"}
        return cell

    def has_result(self, run_id: str) -> bool:
        """True when the cell holds a valid result (a damaged one does not count)."""
        return self.load_cell(run_id).finished

    def write(self, run_id: str, name: str, data: Any) -> None:
        with writing(f"cell {run_id}"):
            atomic_write_json(self.cell_dir(run_id) / name, data)

    def write_bytes(self, run_id: str, name: str, data: bytes) -> None:
        with writing(f"cell {run_id}"):
            atomic_write_bytes(self.cell_dir(run_id) / name, data)

    def commit_result(self, run_id: str, config: dict, result: dict, files: dict[str, bytes] | None = None) -> None:
        """File a computed result with its configuration: the rename of result.json replaces both at once."""
        for name, data in (files or {}).items():  # a selection cell's figures, before its result
            self.write_bytes(run_id, name, data)
        self.write(run_id, "result.json", {**result, "schema": SCHEMA, "run_id": run_id, "config": config})
        try:
            same = _load(self.cell_dir(run_id) / "config.json") == json.loads(json.dumps(config, default=str))
        except (Damaged, EchobenchError, FileNotFoundError):
            same = False
        if not same:  # a copy for people and older readers (result.json's wins); usually written before computing
            self.write(run_id, "config.json", config)
        self.remove(run_id, "error.json")

    def file_failure(self, run_id: str, config: dict, error: str, trace: str = "") -> None:
        """File a failed attempt: error.json; the configuration too unless an older result is kept (a
        failed --force leaves the result and its configuration as they were)."""
        if not self.has_result(run_id):
            self.write(run_id, "config.json", config)
        self.write(run_id, "error.json", {"schema": SCHEMA, "run_id": run_id, "error": error, "traceback": trace})

    def set_aside_if_damaged(self, run_id: str) -> str | None:
        """Move a damaged cell's files into cells/<id>/damaged-<UTC time>/ (call while holding its lock);
        the problem, or None if the cell is sound."""
        cell = self.load_cell(run_id)
        if cell.problem is None:
            return None
        d = self.cell_dir(run_id)
        aside = d / f"damaged-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S.%fZ')}"
        with writing(f"cell {run_id}"):
            aside.mkdir(parents=True)
            for name in ("result.json", "config.json", "error.json"):
                if (d / name).exists():
                    os.replace(d / name, aside / name)
            (aside / "why.txt").write_text(cell.problem + "\n")
        return cell.problem

    def remove_stale_temporaries(self, run_id: str) -> None:
        """Temporary files a killed writer left behind; call only while holding the cell's lock."""
        for tmp in self.cell_dir(run_id).glob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def remove(self, run_id: str, name: str) -> None:
        with writing(f"cell {run_id}"), contextlib.suppress(FileNotFoundError):
            (self.cell_dir(run_id) / name).unlink()

    @contextlib.contextmanager
    def lock(self, run_id: str) -> Iterator[bool]:
        """Yield True while this process holds the cell's lock, False if another process holds it."""
        path = self.cell_dir(run_id) / ".lock"
        with writing(f"cell {run_id}"):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def scan(self) -> list[Cell]:
        """Every cell folder that holds a configuration, a result, or damage, validated; sorted by run id."""
        if not self.cells.is_dir():
            return []
        out = []
        for d in sorted(self.cells.iterdir()):
            if d.name.startswith("."):
                continue
            cell = self.load_cell(d.name)
            if cell.config is not None or cell.result is not None or cell.problem is not None:
                out.append(cell)
        return out

    def iter_cells(self) -> Iterator[tuple[str, dict, dict | None, dict | None]]:
        """(run_id, config, result or None, error or None) for every sound cell with a configuration."""
        for cell in self.scan():
            if cell.problem is None and cell.config is not None:
                yield cell.run_id, cell.config, cell.result, cell.error
