"""Staged, resumable runs: one folder, stages in order, each skipped once its outputs are complete.

A run folder holds ``run.json`` (the kind of run and each stage's settings, recorded when the stage first
starts), ``timings.json`` (seconds per stage, summed over resumed runs) and ``done/STAGE`` markers. A stage's
marker is written last, after every output of the stage has been written atomically, so a stage killed
half-way is run again (its own resumable writers continue where they stopped). Re-running a stage, or any
later one, with other settings is refused: a folder's data never mixes settings. A folder that holds
something other than a run of this kind is refused before anything is written.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from o1_embedder.files import atomic_write_text

__all__ = ["Run", "RunError", "Stage", "log"]

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
TIMINGS_FILE = "timings.json"
DONE_FOLDER = "done"


class RunError(ValueError):
    """A run folder cannot be used as asked (other settings, another kind of run, an incomplete source)."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Stage:
    """One step of a run: ``function(run)`` writes the stage's outputs; ``settings`` are what they depend on."""

    name: str
    function: Callable[[Run], Any]
    settings: dict[str, Any] = field(default_factory=dict)
    #: outputs of the stage that a reused folder must hold (paths relative to the run folder)
    outputs: Sequence[str] = ()
    #: settings added after runs were recorded without them: the value such a record stands for
    earlier: dict[str, Any] = field(default_factory=dict)


class Run:
    """A run folder of ``kind`` with ``stages`` (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike, kind: str, stages: Sequence[Stage]):
        self.folder = Path(folder)
        self.kind = kind
        self.stages = list(stages)
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be distinct: {names}")
        self.record = self._read_record()

    # ------------------------------------------------------------------------------------------ state
    def _read_record(self) -> dict:
        path = self.folder / RUN_FILE
        if self.folder.exists() and not self.folder.is_dir():
            raise RunError(f"{self.folder} is a file, not a run folder")
        if not path.exists():
            if self.folder.is_dir() and any(self.folder.iterdir()):
                raise RunError(f"{self.folder} holds other files and no {RUN_FILE}: it is not an o1-embedder "
                               f"{self.kind} run folder; choose a new or empty --out")
            return {"kind": self.kind, "stages": {}}
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise RunError(f"{path} is not readable JSON ({err}); choose a new --out") from None
        if not isinstance(record, dict) or not isinstance(record.get("stages"), dict):
            raise RunError(f"{path} is not a run record; choose a new --out")
        if record.get("kind") != self.kind:
            raise RunError(f"{self.folder} is an o1-embedder {record.get('kind')!r} run folder, not {self.kind!r}; "
                           f"choose a new --out")
        return record

    def path(self, *parts: str) -> Path:
        return self.folder.joinpath(*parts)

    def done(self, stage: str) -> bool:
        return self.path(DONE_FOLDER, stage).is_file()

    def timings(self) -> dict[str, float]:
        path = self.path(TIMINGS_FILE)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def check_settings(self, upto: str | None = None) -> None:
        """Refuse settings that differ from those recorded, for every stage up to ``upto`` (default: all)."""
        changed = []
        for stage in self.stages:
            recorded = self.record["stages"].get(stage.name)
            if recorded is not None:
                for key, value in _plain(stage.settings).items():
                    before = recorded[key] if key in recorded else _plain(stage.earlier).get(key, value)
                    if before != value:
                        changed.append(f"{stage.name}: {key} {before!r} -> {value!r}")
            if stage.name == upto:
                break
        if changed:
            raise RunError(f"{self.folder} was run with other settings ({'; '.join(changed)}); resuming would mix "
                           f"them: pass the recorded values, or use a new --out")

    def _record_settings(self, stage: Stage) -> None:
        current = _plain(stage.settings)
        if self.record["stages"].get(stage.name) != current:
            self.record["stages"][stage.name] = {**self.record["stages"].get(stage.name, {}), **current}
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path(RUN_FILE), json.dumps(self.record, indent=2, sort_keys=True) + "\n")

    def _add_time(self, stage: str, seconds: float) -> None:
        timings = self.timings()
        timings[stage] = round(timings.get(stage, 0.0) + seconds, 1)
        atomic_write_text(self.path(TIMINGS_FILE), json.dumps(timings, indent=2) + "\n")

    def take_from(self, source: Run, files: dict[str, Sequence[str]]) -> list[str]:
        """Copy the stages of ``source`` (a run folder of the same kind) that are complete there and were run with
        the settings this run has for them, in stage order up to the first that is not, with their ``files``
        (stage -> paths relative to the folder; folders copied whole). Returns the stages taken."""
        import shutil

        if source.folder.resolve() == self.folder.resolve():
            raise RunError(f"--reuse {source.folder}: that is --out itself")
        if not source.path(RUN_FILE).is_file():
            raise RunError(f"--reuse {source.folder}: not a {self.kind} run folder (no {RUN_FILE})")
        taken = []
        for stage in self.stages:
            if stage.name not in files or not source.done(stage.name):
                break
            recorded = source.record["stages"].get(stage.name, {})
            if recorded != _plain(stage.settings):
                break
            missing = [f for f in files[stage.name] if not source.path(f).exists()]
            if missing:
                raise RunError(f"--reuse {source.folder}: stage {stage.name} is marked done but {missing} are missing")
            taken.append(stage)
        self.folder.mkdir(parents=True, exist_ok=True)
        for stage in taken:
            for name in files[stage.name]:
                origin, target = source.path(name), self.path(name)
                if origin.is_dir():
                    shutil.copytree(origin, target, dirs_exist_ok=True)
                else:
                    shutil.copy2(origin, target)
            self.record["stages"][stage.name] = _plain(stage.settings)
        self.record["reused_from"] = str(source.folder)
        atomic_write_text(self.path(RUN_FILE), json.dumps(self.record, indent=2, sort_keys=True) + "\n")
        timings = source.timings()
        for stage in taken:  # markers last: a stage is taken only once all its files are
            self._add_time(stage.name, timings.get(stage.name, 0.0))
            self.mark_done(stage.name)
        return [stage.name for stage in taken]

    def mark_done(self, stage: str) -> None:
        atomic_write_text(self.path(DONE_FOLDER, stage), time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")

    # -------------------------------------------------------------------------------------------- run
    def run(self, *, stop_after: str | None = None, skip: Sequence[str] = ()) -> None:
        """Run every stage not yet done, in order (``skip``: stages left out of this run)."""
        names = [s.name for s in self.stages]
        if stop_after is not None and stop_after not in names:
            raise RunError(f"unknown stage {stop_after!r}; stages: {', '.join(names)}")
        self.check_settings()
        for stage in self.stages:
            if stage.name in skip:
                continue
            if self.done(stage.name):
                log(f"{stage.name}: done earlier")
            else:
                self._record_settings(stage)
                log(f"{stage.name}: starting")
                started = time.perf_counter()
                try:
                    stage.function(self)
                finally:  # an interrupted stage's time counts too: a resumed stage adds the rest
                    self._add_time(stage.name, time.perf_counter() - started)
                self.mark_done(stage.name)
                log(f"{stage.name}: done in {time.perf_counter() - started:.0f}s")
            if stage.name == stop_after:
                break


def _plain(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as JSON would give them back (tuples as lists), so recorded and current values compare equal."""
    return json.loads(json.dumps(settings))
