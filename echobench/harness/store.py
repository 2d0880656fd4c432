"""The results store: one directory per cell, every file written atomically.

Layout of an output directory:

    OUT/suite.json                 which suite owns the directory
    OUT/cells/<run_id>/config.json the cell's canonical spec and the environment that ran it
    OUT/cells/<run_id>/result.json metrics, per-epoch curves, timings (present = finished)
    OUT/cells/<run_id>/error.json  the error and traceback of a failed attempt
    OUT/cells/<run_id>/.lock       held (flock) by the runner computing the cell
    OUT/commands/<time>-<pid>.json each `echobench run` here: command line, suite, device, cell counts

A file is written to a temporary name in the same directory, flushed, fsynced and then renamed over
the target, so a reader (or a runner killed with SIGKILL) never sees half a file. The per-cell lock
is an advisory `flock`: the kernel drops it when its process dies, so a cell whose runner was killed
is free again, and two runners on one directory never compute the same cell at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Any, Iterator

from echobench.errors import EchobenchError
from echobench.files import atomic_write_bytes, atomic_write_json, read_json

COMMANDS_DIR = "commands"  # OUT/commands/<UTC time>-<pid>.json: one file per `echobench run`, never rewritten


class Store:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.cells = self.root / "cells"

    # --- ownership -------------------------------------------------------------------------------
    def claim(self, suite_name: str) -> None:
        """Mark the directory as `suite_name`'s, refusing one that holds another suite's results."""
        marker = self.root / "suite.json"
        if self.root.exists() and not self.root.is_dir():
            raise EchobenchError(f"output path {self.root} exists and is not a directory; choose another --out")
        if marker.exists():
            owner = read_json(marker).get("suite")
            if owner != suite_name:
                raise EchobenchError(
                    f"{self.root} holds results of suite {owner!r}, not {suite_name!r}; "
                    f"pass another --out directory (nothing was changed)"
                )
            return
        if self.cells.exists() and any(self.cells.iterdir()):
            raise EchobenchError(f"{self.root} holds cells but no suite.json; pass another --out directory")
        atomic_write_json(marker, {"suite": suite_name})

    def owner(self) -> str | None:
        marker = self.root / "suite.json"
        return read_json(marker).get("suite") if marker.exists() else None

    # --- cells -----------------------------------------------------------------------------------
    def cell_dir(self, run_id: str) -> Path:
        return self.cells / run_id

    def has_result(self, run_id: str) -> bool:
        return (self.cell_dir(run_id) / "result.json").exists()

    def write(self, run_id: str, name: str, data: Any) -> None:
        atomic_write_json(self.cell_dir(run_id) / name, data)

    def write_bytes(self, run_id: str, name: str, data: bytes) -> None:
        atomic_write_bytes(self.cell_dir(run_id) / name, data)

    def remove_stale_temporaries(self, run_id: str) -> None:
        """Temporary files a killed writer left behind; call only while holding the cell's lock."""
        for tmp in self.cell_dir(run_id).glob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def remove(self, run_id: str, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.cell_dir(run_id) / name).unlink()

    @contextlib.contextmanager
    def lock(self, run_id: str) -> Iterator[bool]:
        """Yield True while this process holds the cell's lock, False if another process holds it."""
        path = self.cell_dir(run_id) / ".lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
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

    def iter_cells(self) -> Iterator[tuple[str, dict, dict | None, dict | None]]:
        """(run_id, config, result or None, error or None) for every cell with a config."""
        if not self.cells.is_dir():
            return
        for d in sorted(self.cells.iterdir()):
            config = d / "config.json"
            if not config.exists():
                continue
            result = d / "result.json"
            error = d / "error.json"
            yield (
                d.name,
                read_json(config),
                read_json(result) if result.exists() else None,
                read_json(error) if error.exists() else None,
            )
