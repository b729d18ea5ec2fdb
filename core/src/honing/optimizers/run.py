"""One compile's state: its inputs, its run log, what it noted and found. Never kept on the optimizer.

`Optimizer.compile_run` makes a `CompileRun`, hands it to the optimizer's `optimize(program, run)` and
returns it finished, so one optimizer object (frozen settings and nothing else) can compile any number of
times, in several threads at once, and what a compile found is read from its own run, not from "the last
compile".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs

from honing.data import Example
from honing.modules import Module
from honing.optimizers.kit.search import CandidateResult, apply_state
from honing.runs import RunLog

log = logging.getLogger("honing.optimizers")

NO_VALSET_NOTE = ("no valset: candidates are scored on the trainset, which also supplies their demos, so the "
                  "scores are optimistic and favour memorised examples; pass valset= for an honest selection")


@attrs.define(eq=False)
class CompileRun:
    """The state of one compile.

    :ivar optimizer: the optimizer's name (for messages and events).
    :ivar settings: the optimizer's frozen settings object.
    :ivar student: the program as given (never changed); the optimizer works on a copy.
    :ivar log: the run's event log when compiling with ``run_dir=`` (opened by `compile_run`, which
        writes its start, its outcome and any interruption; the optimizer appends its own events and may
        close it with `RunLog.finish`).
    :ivar options: the extra keyword arguments of `compile` this optimizer declares
        (`Optimizer.compile_options`), e.g. an Optuna ``storage``.
    :ivar ranked: candidates the optimizer scored, best first, when it keeps them (`top_programs`).
    :ivar artifacts: what this compile made besides the program, by name (e.g. ``"study"``, an Optuna
        study), for inspection after the compile.
    :ivar program: the compiled program, once the compile has finished.
    """

    optimizer: str
    settings: Any
    student: Module
    trainset: list[Example]
    valset: list[Example] | None
    teacher: Module | None
    log: RunLog | None = None
    resume: bool = False
    options: Mapping[str, Any] = attrs.Factory(dict)
    notes: list[str] = attrs.Factory(list)
    #: examples that failed during the compile and that the optimizer did not count in its own record
    example_errors: int = 0
    ranked: list[CandidateResult] = attrs.Factory(list)
    artifacts: dict[str, Any] = attrs.Factory(dict)
    program: Module | None = None

    def note(self, message: str) -> None:
        """Record something the user should know (kept in the compiled program's record, and logged)."""
        log.info("%s: %s", self.optimizer, message)
        self.notes.append(message)

    def count_errors(self, n: int) -> None:
        """Count failed examples the optimizer does not write into its own record."""
        self.example_errors += n

    def selection_set(self) -> list[Example]:
        """The set candidates are scored on: the valset; without one the trainset, with a note saying
        the selection is then optimistic."""
        if self.valset is not None:
            return self.valset
        self.note(NO_VALSET_NOTE)
        return self.trainset

    def top_programs(self, k: int = 3) -> list[Module]:
        """The `k` best candidates this compile scored, as programs (best first), e.g. for an Ensemble.

        Only optimizers that keep their candidates fill `ranked`; for the others this is empty.
        """
        return [apply_state(self.student.deepcopy().reset(), r.state) for r in self.ranked[:k]]
