"""`KNNProgram`: a program whose predictors see, at each call, the call's nearest training examples.

``KNNProgram(program)`` wraps any honing program. Once compiled by `KNNFewShot` (or loaded), each call
embeds its input fields, fetches the `k` nearest stored training examples and runs the wrapped program
inside `honing.modules.call_demos`, so each predictor uses those examples' demos for this call only:
the predictors are never mutated, and calls in several threads never see each other's demos. Demos
are ordered by similarity, the closest LAST (next to the query).

Predictor names gain the wrapper's attribute name as a prefix: a bare ``Predict`` (``self`` on its own)
becomes ``program``, a ``ChainOfThought``'s ``predict`` becomes ``program.predict``, a ``hop.0.predict``
becomes ``program.hop.0.predict``. So a saved KNN program loads into the same wrapper:
``KNNProgram(student).load("compiled.json")`` (or ``KNNFewShot.load_program(path, student)``).

Saving writes the JSON (examples, their demos, the embedder's name, the index settings) and, beside it,
the FAISS index as ``<name>.knn.faiss`` with its sha256 in the JSON. Loading checks the checksum (a
mismatch is a `LoadError` naming the index file), never unpickles anything, and rebuilds the index from
the stored examples (re-embedding them, which the embedding cache makes cheap) when the JSON names no
index file — as when the program was saved nested inside another module, or by
``honing.serialization.save_program`` directly.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from honing import settings
from honing.data import Prediction
from honing.errors import ConfigurationError, InputError, LoadError
from honing.modules import Module, call_demos, named_calls, program_inputs
from honing.serialization import _json_safe as json_safe  # demo values as JSON, as the core saves them

from honing_knn.index import IndexInfo

log = logging.getLogger("honing.optimizers")

#: Version of the extra-state layout written by `KNNProgram.extra_state`.
STATE_FORMAT = 1


def render_inputs(values: Mapping[str, Any], fields: Sequence[str]) -> str:
    """The text embedded for a call or an example: the value itself for one input field, else
    ``"name: value | name: value"`` in the program's field order. Non-text values are JSON."""

    def text(value: Any) -> str:
        if isinstance(value, str):
            return value
        return json.dumps(json_safe(dict(value) if isinstance(value, Mapping) else value), ensure_ascii=False,
                          sort_keys=True)

    if len(fields) == 1:
        return text(values[fields[0]])
    return " | ".join(f"{name}: {text(values[name])}" for name in fields)


@attrs.frozen
class Neighbour:
    """A retrieved training example: its position in the index, its trainset index and its similarity."""

    position: int
    example: int
    score: float


class _Shared:
    """Holds something copies of a program share (a model, an index): `deepcopy` returns it as is."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __deepcopy__(self, memo: dict[int, Any]) -> _Shared:
        return self


@attrs.frozen
class _IndexFile:
    file: str
    sha256: str


class _Forward:
    """A bound `KNNProgram._forward` whose signature lists the input fields (when they are known)."""

    __slots__ = ("__signature__", "_fn")

    def __init__(self, fn: Any, fields: Sequence[str] | None) -> None:
        self._fn = fn
        if fields is None:
            params = [inspect.Parameter("inputs", inspect.Parameter.VAR_KEYWORD)]
        else:
            params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY) for name in fields]
        self.__signature__ = inspect.Signature(params)

    def __call__(self, *args: Any, **inputs: Any) -> Any:
        if args:
            raise TypeError("a KNNProgram takes keyword arguments only, e.g. program(text='...')")
        return self._fn(**inputs)


class KNNState:
    """What a compiled KNN program retrieves from (read-only once built; copies share it).

    `texts[i]`, `inputs[i]`, `sources[i]` (trainset index) and `demos[i]` (predictor name → demos,
    names relative to the wrapped program) describe the example at index position i.
    """

    def __init__(self, *, embedder: Any, embedder_state: dict[str, Any], input_fields: Sequence[str], k: int,
                 texts: Sequence[str], inputs: Sequence[dict[str, Any]], sources: Sequence[int],
                 demos: Sequence[dict[str, list[dict[str, Any]]]], index: Any, info: IndexInfo,
                 dim: int, seed: int = 0) -> None:
        self.embedder = embedder
        self.embedder_state = dict(embedder_state)
        self.input_fields = tuple(input_fields)
        self.k = k
        self.texts = list(texts)
        self.inputs = list(inputs)
        self.sources = list(sources)
        self.demos = list(demos)
        self.index = index
        self.info = info
        self.dim = dim
        self.seed = seed
        self._positions = {text: i for i, text in enumerate(self.texts)}
        self._managed = frozenset(name for per in self.demos for name, items in per.items() if items)

    def __deepcopy__(self, memo: dict[int, Any]) -> KNNState:
        return self

    def __len__(self) -> int:
        return len(self.texts)

    def managed(self) -> frozenset[str]:
        """Predictor names that have retrieved demos (the others keep their own)."""
        return self._managed

    def render(self, values: Mapping[str, Any]) -> str:
        missing = [f for f in self.input_fields if f not in values]
        if missing:
            raise InputError(f"missing input field(s) {', '.join(map(repr, missing))}; this KNN program retrieves "
                             f"by {', '.join(self.input_fields)}")
        return render_inputs(values, self.input_fields)

    def embed(self, texts: Sequence[str]) -> Any:
        vectors = self.embedder.embed(texts)
        if len(texts) and vectors.shape[1] != self.dim:
            raise ConfigurationError(f"embedder {self.embedder.name!r} gives vectors of dimension {vectors.shape[1]}, "
                                     f"the index holds dimension {self.dim}: use the embedder it was built with")
        return vectors

    def search(self, vectors: Any, k: int, *, exclude_texts: Sequence[str] | None = None) -> list[list[Neighbour]]:
        """The `k` nearest stored examples of each query vector, most similar first."""
        n = len(self.texts)
        want = min(k + (1 if exclude_texts is not None else 0), n)
        if want == 0 or len(vectors) == 0:
            return [[] for _ in range(len(vectors))]
        from honing_knn.index import search

        scores, ids = search(self.index, vectors, want)
        out = []
        for row, (row_scores, row_ids) in enumerate(zip(scores, ids)):
            skip = self._positions.get(exclude_texts[row]) if exclude_texts is not None else None
            found = [Neighbour(int(i), self.sources[int(i)], float(s)) for s, i in zip(row_scores, row_ids)
                     if i >= 0 and int(i) != skip]
            out.append(found[:k])
        return out

    def demos_for(self, neighbours: Sequence[Neighbour]) -> dict[str, list[dict[str, Any]]]:
        """Per predictor, the neighbours' demos with the closest example LAST."""
        out: dict[str, list[dict[str, Any]]] = {}
        for neighbour in reversed(neighbours):
            for name, items in self.demos[neighbour.position].items():
                out.setdefault(name, []).extend(items)
        return out


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
        self._saved: _IndexFile | None = None
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

    @property
    def forward(self) -> Any:  # type: ignore[override]
        """Retrieve, then run the wrapped program. A property so that its signature names the wrapped
        program's input fields (``honing.modules.program_inputs`` and the CLI read it)."""
        return _Forward(self._forward, program_inputs(self.program))

    def _forward(self, **inputs: Any) -> Any:
        [neighbours] = self.retrieve([inputs])
        return self._run(inputs, neighbours)

    def _run(self, inputs: Mapping[str, Any], neighbours: Sequence[Neighbour]) -> Any:
        demos = self.state.demos_for(neighbours)
        managed = self.state.managed()
        overrides = {p: demos.get(name, []) for name, p in self.program.named_predictors() if name in managed}
        with call_demos(overrides):
            return self.program(**inputs)

    def batch(self, inputs: Sequence[Mapping[str, Any]], *, num_threads: int | None = None) -> list[Prediction]:
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
        self._saved = _IndexFile(name, write_index(state.index, target.parent / name))
        try:
            super().save(path)
        finally:
            self._saved = None

    def extra_state(self) -> dict[str, Any]:
        state = self._knn.value
        if state is None:
            return {}
        index: dict[str, Any] = {**state.info.to_json(), "ntotal": len(state), "seed": state.seed}
        if self._saved is not None:
            index.update(file=self._saved.file, sha256=self._saved.sha256)
        return {
            "format": STATE_FORMAT,
            "embedder": dict(state.embedder_state),
            "dim": state.dim,
            "k": state.k,
            "input_fields": list(state.input_fields),
            "index": index,
            "examples": [{"source": source, "inputs": json_safe(inputs), "demos": json_safe(demos)}
                         for source, inputs, demos in zip(state.sources, state.inputs, state.demos)],
        }

    def load(self, path: str | os.PathLike[str], *, allow_endpoints: bool = False) -> KNNProgram:
        """Load a saved KNN program (JSON and index file); a bad KNN state names this file."""
        try:
            super().load(path, allow_endpoints=allow_endpoints)
        except LoadError as exc:
            if exc.file is not None:
                raise
            where = exc.path.replace("$.extra_state.*", "$.extra_state.self") if exc.path else None
            message = str(exc).removesuffix(f" ({exc.path})") if exc.path else str(exc)
            raise LoadError(message, file=str(path), path=where) from None
        return self

    def load_extra_state(self, state: dict[str, Any], *, base_path: str | None = None) -> None:
        if not state:
            return
        self._knn = _Shared(_state_from_json(state, base_path=base_path, embedder=self._embedder.value))


# ----------------------------------------------------------------------------------------------------
# loading

def _fail(message: str, where: str = "") -> LoadError:
    return LoadError(f"KNN state{(' ' + where) if where else ''}: {message}",
                     path=f"$.extra_state.*{('.' + where) if where else ''}")


def _check(condition: bool, message: str, where: str = "") -> None:
    if not condition:
        raise _fail(message, where)


def _is_int(value: Any) -> bool:
    return type(value) is int


def _state_from_json(raw: dict[str, Any], *, base_path: str | None, embedder: Any) -> KNNState:
    from honing.embedders import CachedEmbedder, resolve_embedder

    _check(raw.get("format") == STATE_FORMAT, f"unknown format {raw.get('format')!r} (this honing-knn reads "
           f"{STATE_FORMAT}); upgrade honing-knn", "format")
    spec = raw.get("embedder")
    _check(isinstance(spec, dict) and isinstance(spec.get("name"), str), "no embedder name", "embedder")
    dim, k = raw.get("dim"), raw.get("k")
    _check(_is_int(dim) and dim > 0, f"bad dim {dim!r}", "dim")
    _check(_is_int(k) and k > 0, f"bad k {k!r}", "k")
    fields = raw.get("input_fields")
    _check(isinstance(fields, list) and bool(fields) and all(isinstance(f, str) for f in fields),
           "input_fields must be a non-empty list of names", "input_fields")
    examples = raw.get("examples")
    _check(isinstance(examples, list) and bool(examples), "examples must be a non-empty list", "examples")
    sources, inputs, demos, texts = [], [], [], []
    for i, example in enumerate(examples):
        where = f"examples[{i}]"
        _check(isinstance(example, dict) and set(example) == {"source", "inputs", "demos"},
               "expected an object with source, inputs and demos", where)
        _check(_is_int(example["source"]) and example["source"] >= 0, "source must be a trainset index", where)
        values = example["inputs"]
        _check(isinstance(values, dict) and all(f in values for f in fields),
               f"inputs must have the fields {fields}", where + ".inputs")
        per = example["demos"]
        _check(isinstance(per, dict) and all(isinstance(v, list) and all(isinstance(d, dict) for d in v)
                                             for v in per.values()),
               "demos must map predictor names to lists of objects", where + ".demos")
        sources.append(example["source"])
        inputs.append(values)
        demos.append({name: [dict(d) for d in items] for name, items in per.items()})
        texts.append(render_inputs(values, fields))
    _check(len(set(texts)) == len(texts), "two examples have the same inputs", "examples")
    index_raw = raw.get("index")
    _check(isinstance(index_raw, dict), "no index settings", "index")
    try:
        info = IndexInfo.from_json({k_: v for k_, v in index_raw.items()
                                    if k_ not in ("ntotal", "seed", "file", "sha256")})
    except TypeError as exc:
        raise _fail(f"bad index settings: {exc}", "index") from None
    _check(isinstance(info.factory, str) and isinstance(info.params, str), "bad index factory", "index")
    _check(index_raw.get("ntotal") == len(examples), f"the index says {index_raw.get('ntotal')} vectors, "
           f"there are {len(examples)} examples", "index.ntotal")
    seed = index_raw.get("seed", 0)
    _check(_is_int(seed), "bad seed", "index.seed")

    options = {key: value for key, value in spec.items() if key != "name"}
    if embedder is None:
        from honing.plugins.registry import UnknownEntry

        try:
            embedder = resolve_embedder(spec["name"], **options)
        except (UnknownEntry, ConfigurationError) as exc:
            raise _fail(f"cannot find the embedder it was built with ({exc}); pass it: "
                        "KNNProgram(program, embedder=...).load(path)", "embedder") from None
    else:
        embedder = resolve_embedder(embedder)
        if getattr(embedder, "name", None) != spec["name"]:
            raise _fail(f"it was built with the embedder {spec['name']!r}, but this KNNProgram was given "
                        f"{getattr(embedder, 'name', embedder)!r}", "embedder")
    cached = CachedEmbedder(embedder)
    if cached.dim is not None and cached.dim != dim:
        raise _fail(f"the embedder {cached.name!r} gives vectors of dimension {cached.dim}, the saved index has "
                    f"dimension {dim}", "dim")

    file, digest = index_raw.get("file"), index_raw.get("sha256")
    if file is not None:
        _check(isinstance(file, str) and isinstance(digest, str) and len(digest) == 64,
               "index file without a sha256", "index")
        _check(file == Path(file).name and file not in ("", ".", ".."),
               f"the index file {file!r} must be a plain file name beside the program file", "index.file")
        if base_path is None:
            raise _fail("the program file names an index file, but was not loaded from a file", "index.file")
        from honing_knn.index import read_index, set_params

        index = read_index(Path(base_path) / file, sha256=digest, ntotal=len(examples), dim=dim)
        set_params(index, info)
    else:
        from honing_knn.index import build_index

        log.warning("KNN program saved without its FAISS index: rebuilding it from %d examples", len(texts))
        vectors = cached.embed(texts)
        if vectors.shape[1] != dim:
            raise _fail(f"the embedder gives dimension {vectors.shape[1]}, the file says {dim}", "dim")
        spec_str = info.factory + (f"|{info.params}" if info.params else "")
        if info.nprobe is not None and not info.params:
            spec_str = f"{info.factory}|nprobe={info.nprobe}"
        index, _ = build_index(vectors, spec_str, k=k, seed=seed)
    return KNNState(embedder=cached, embedder_state=dict(spec), input_fields=fields, k=k, texts=texts,
                     inputs=inputs, sources=sources, demos=demos, index=index, info=info, dim=dim, seed=seed)
