"""`KNNProgram`: a program whose predictors see, at each call, the call's nearest training examples.

``KNNProgram(program)`` wraps any honing program. Once compiled by `KNNFewShot` (or loaded), each call
embeds its input fields, fetches the `k` nearest stored training examples and runs the wrapped program
inside `call_demos`, so each predictor uses those examples' demos for this call only: the predictors are
never mutated, and calls in several threads never see each other's demos. Demos are ordered by
similarity, the closest LAST (next to the query).

Predictor names gain the wrapper's attribute name as a prefix: a bare ``Predict`` (``self`` on its own)
becomes ``program``, a ``ChainOfThought``'s ``predict`` becomes ``program.predict``, a ``hop.0.predict``
becomes ``program.hop.0.predict``. So a saved KNN program loads into the same wrapper:
``KNNProgram(student).load("compiled.json")`` (or ``KNNFewShot.load_program(path, student)``).

Saving writes the JSON (examples, their demos, the embedder's name, the index settings) and, beside it,
the FAISS index as ``<name>.knn.faiss`` with its sha256 in the JSON. Loading checks the checksum (a
mismatch is a `LoadError` naming the index file), never unpickles anything, and rebuilds the index from
the stored examples (re-embedding them, which the embedding cache makes cheap) when the JSON names no
index file — as when the program was saved nested inside another module, or by the core's
``save_program`` directly. The state and its saved form are `honing_knn.state`'s.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from honing.plugin_api import (
    ConfigurationError,
    LoadError,
    Module,
    Prediction,
    call_demos,
    named_calls,
    program_inputs,
    settings,
)

from honing_knn.state import WHERE, IndexFile, KNNState, Neighbour, read_state


class _Shared:
    """Holds something copies of a program share (a model, an index): `deepcopy` returns it as is."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __deepcopy__(self, memo: dict[int, Any]) -> _Shared:
        return self


class KNNProgram(Module):
    """A program whose predictors use the call's nearest training examples as demos (see the module doc).

    `program` is the wrapped program. `embedder` is needed only to load a program saved with an embedder
    that cannot be found by name (a plain function): pass the same embedder again.
    """

    def __init__(self, program: Module, *, embedder: Any = None) -> None:
        if isinstance(program, KNNProgram):
            raise TypeError("KNNProgram(program): the program is already a KNNProgram")
        if not isinstance(program, Module):
            raise TypeError(f"KNNProgram wraps a honing Module, got {type(program).__name__}")
        self.program = program
        self._embedder = _Shared(embedder)
        self._knn = _Shared(None)
        self._saved: IndexFile | None = None
        self._leave_one_out = False

    @classmethod
    def _compiled(cls, program: Module, state: KNNState, *, leave_one_out: bool = False) -> KNNProgram:
        wrapper = cls(program)
        wrapper._knn = _Shared(state)
        wrapper._leave_one_out = leave_one_out
        return wrapper

    def __repr__(self) -> str:
        state = self._knn.value
        what = f"{len(state)} examples, k={state.k}" if state is not None else "not compiled"
        return f"KNNProgram({self.program!r}, {what})"

    # -- retrieval ------------------------------------------------------------------------------------
    @property
    def state(self) -> KNNState:
        state = self._knn.value
        if state is None:
            raise ConfigurationError("this KNNProgram has no training examples yet: compile it with "
                                     "KNNFewShot(...).compile(program, trainset=...) or load a saved one")
        return state

    @property
    def k(self) -> int:
        return self.state.k

    def retrieve(self, queries: Sequence[Mapping[str, Any]], k: int | None = None) -> list[list[Neighbour]]:
        """The nearest training examples of each query (a mapping of input values), most similar first.
        One embedding call and one index search for the whole batch."""
        state = self.state
        texts = [state.render(q) for q in queries]
        vectors = state.embed(texts)
        return state.search(vectors, state.k if k is None else k,
                            exclude_texts=texts if self._leave_one_out else None)

    def prefetch(self, queries: Sequence[Mapping[str, Any]]) -> None:
        """Embed many queries in batches ahead of their calls (what `Evaluate` can call with its devset):
        each call then finds its vector in the embedding cache instead of embedding one text alone.
        Does nothing useful for an embedder that is not cached on disk (an unnamed callable)."""
        state = self.state
        if state.embedder.cache is not None:
            state.embed([state.render(q) for q in queries])

    # -- running --------------------------------------------------------------------------------------
    def input_names(self) -> list[str] | None:
        """The wrapped program's input fields (forward takes ``**inputs`` and passes them on)."""
        return program_inputs(self.program)

    def __call__(self, *args: Any, **inputs: Any) -> Any:
        if args:
            raise TypeError("a KNNProgram takes keyword arguments only, e.g. program(text='...')")
        return super().__call__(**inputs)

    def forward(self, **inputs: Any) -> Any:
        """Retrieve the call's nearest examples, then run the wrapped program with their demos."""
        [neighbours] = self.retrieve([inputs])
        return self._run(inputs, neighbours)

    def _run(self, inputs: Mapping[str, Any], neighbours: Sequence[Neighbour]) -> Any:
        demos = self.state.demos_for(neighbours)
        managed = self.state.managed()
        overrides = {p: demos.get(name, []) for name, p in self.program.named_predictors() if name in managed}
        with call_demos(overrides):
            return self.program(**inputs)

    def batch(self, inputs: Sequence[Mapping[str, Any]], *,
              num_threads: int | None = None) -> list[Prediction]:
        """Run the program on many inputs: one batched embedding and index search, then the calls
        (on `num_threads` threads; default: the configured `num_threads`)."""
        items = [dict(x.inputs()) if hasattr(x, "inputs") and callable(x.inputs) else dict(x) for x in inputs]
        neighbours = self.retrieve(items)
        threads = num_threads or settings.current().num_threads or 1

        def one(i: int) -> Any:
            with named_calls(self):
                return self._run(items[i], neighbours[i])

        return [future.result() for future in settings.map_in_threads(one, range(len(items)), threads)]

    # -- saving -------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the JSON and, beside it, the FAISS index ``<stem>.knn.faiss`` (checksum in the JSON)."""
        from honing_knn.index import write_index

        state = self._knn.value
        if state is None:
            super().save(path)
            return
        target = Path(path)
        name = f"{target.stem or target.name}.knn.faiss"
        # named in the JSON only by this save: any other dump of the program has no file beside it
        self._saved = IndexFile(name, write_index(state.index, target.parent / name))
        try:
            super().save(path)
        finally:
            self._saved = None

    def extra_state(self) -> dict[str, Any]:
        state = self._knn.value
        return state.to_json(self._saved) if state is not None else {}

    def load(self, path: str | os.PathLike[str], *, allow_endpoints: bool = False) -> KNNProgram:
        """Load a saved KNN program (JSON and index file); a bad KNN state names this file."""
        try:
            super().load(path, allow_endpoints=allow_endpoints)
        except LoadError as exc:
            if exc.file is not None:
                raise
            where = exc.path.replace(WHERE, "$.extra_state.self") if exc.path else None
            message = str(exc).removesuffix(f" ({exc.path})") if exc.path else str(exc)
            raise LoadError(message, file=str(path), path=where) from None
        return self

    def load_extra_state(self, state: dict[str, Any], *, base_path: str | None = None) -> None:
        if not state:
            return
        self._knn = _Shared(read_state(state, base_path=base_path, embedder=self._embedder.value))
