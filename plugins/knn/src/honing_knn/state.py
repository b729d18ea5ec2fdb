"""What a compiled KNN program retrieves from (`KNNState`), and its saved form.

A `KNNState` holds the stored examples (the text embedded for each, its inputs, its trainset index and
its demos), the FAISS index over their vectors and the embedder that made them. It never changes once
built, so copies of a program share it.

Saved, it is the KNN module's extra state (`KNNState.to_json`). `read_state` reads it back: the layout is
declared by `SavedState` (with `SavedIndex` and `SavedExample`) and structured by the core's converter
(`structure_state`: exact types, required and unknown keys, each problem a LoadError with its JSON path);
`SavedState.check` adds the rules types cannot state, then the embedder is found and the index read from
the file beside the program (or rebuilt from the examples when the file names none).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from honing.plugin_api import (
    CachedEmbedder,
    ConfigurationError,
    InputError,
    LoadError,
    UnknownEntry,
    json_safe,
    resolve_embedder,
    structure_state,
)

from honing_knn.index import IndexInfo

log = logging.getLogger("honing.optimizers")

#: Version of the saved layout (`SavedState`).
STATE_FORMAT = 1
#: Where a KNN state sits in a program file. A module's `load_extra_state` is not told its own path;
#: `KNNProgram.load` puts the module's name in place of the ``*``.
WHERE = "$.extra_state.*"


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


@attrs.frozen
class IndexFile:
    """The FAISS index written beside a program file: its name there and its sha256."""

    file: str
    sha256: str


# ----------------------------------------------------------------------------------------------------
# the state

@attrs.frozen(eq=False)
class KNNState:
    """What a compiled KNN program retrieves from (read-only once built; copies share it).

    `texts[i]`, `inputs[i]`, `sources[i]` (trainset index) and `demos[i]` (predictor name → demos,
    names relative to the wrapped program) describe the example at index position i.
    """

    embedder: Any  # a CachedEmbedder
    embedder_state: dict[str, Any] = attrs.field(converter=dict)
    input_fields: tuple[str, ...] = attrs.field(converter=tuple)
    k: int
    texts: list[str] = attrs.field(converter=list)
    inputs: list[dict[str, Any]] = attrs.field(converter=list)
    sources: list[int] = attrs.field(converter=list)
    demos: list[dict[str, list[dict[str, Any]]]] = attrs.field(converter=list)
    index: Any
    info: IndexInfo
    dim: int
    seed: int = 0
    _positions: dict[str, int] = attrs.field(init=False, repr=False)
    _managed: frozenset[str] = attrs.field(init=False, repr=False)

    @_positions.default
    def _position_of_each_text(self) -> dict[str, int]:
        return {text: i for i, text in enumerate(self.texts)}

    @_managed.default
    def _predictors_with_demos(self) -> frozenset[str]:
        return frozenset(name for per in self.demos for name, items in per.items() if items)

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
            raise InputError(f"missing input field(s) {', '.join(map(repr, missing))}; this KNN program "
                             f"retrieves by {', '.join(self.input_fields)}")
        return render_inputs(values, self.input_fields)

    def embed(self, texts: Sequence[str]) -> Any:
        vectors = self.embedder.embed(texts)
        if len(texts) and vectors.shape[1] != self.dim:
            raise ConfigurationError(f"embedder {self.embedder.name!r} gives vectors of dimension "
                                     f"{vectors.shape[1]}, the index holds dimension {self.dim}: use the "
                                     "embedder it was built with")
        return vectors

    def search(self, vectors: Any, k: int, *,
               exclude_texts: Sequence[str] | None = None) -> list[list[Neighbour]]:
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

    def to_json(self, index_file: IndexFile | None = None) -> dict[str, Any]:
        """The saved form (`SavedState`); `index_file` names the index written beside the program file."""
        index: dict[str, Any] = {**self.info.to_json(), "ntotal": len(self), "seed": self.seed}
        if index_file is not None:
            index.update(file=index_file.file, sha256=index_file.sha256)
        return {
            "format": STATE_FORMAT,
            "embedder": dict(self.embedder_state),
            "dim": self.dim,
            "k": self.k,
            "input_fields": list(self.input_fields),
            "index": index,
            "examples": [{"source": source, "inputs": json_safe(inputs), "demos": json_safe(demos)}
                         for source, inputs, demos in zip(self.sources, self.inputs, self.demos)],
        }


# ----------------------------------------------------------------------------------------------------
# the saved form

@attrs.frozen
class SavedExample:
    """One stored example: its trainset index, its input values and its demos per predictor."""

    source: int
    inputs: dict[str, Any]
    demos: dict[str, list[dict[str, Any]]]


@attrs.frozen
class SavedIndex(IndexInfo):
    """How the index was built (`IndexInfo`), its size and seed, and the file beside the program that
    holds it (none when the program was saved without one: the index is then rebuilt)."""

    ntotal: int = attrs.field(kw_only=True)
    seed: int = attrs.field(default=0, kw_only=True)
    file: str | None = attrs.field(default=None, kw_only=True)
    sha256: str | None = attrs.field(default=None, kw_only=True)

    def info(self) -> IndexInfo:
        return IndexInfo(self.factory, self.params, self.nlist, self.nprobe, self.recall)


@attrs.frozen
class SavedState:
    """A KNN state as `KNNState.to_json` writes it (format `STATE_FORMAT`)."""

    format: int
    embedder: dict[str, Any]  # "name" and the options the embedder is made with again
    dim: int
    k: int
    input_fields: tuple[str, ...]
    index: SavedIndex
    examples: tuple[SavedExample, ...]

    def check(self) -> list[str]:
        """The rules the types do not state (the first one broken is a LoadError naming its place).
        Returns the text each example is retrieved by."""
        _check(isinstance(self.embedder.get("name"), str), "no embedder name", "embedder")
        _check(self.dim > 0, f"bad dim {self.dim!r}", "dim")
        _check(self.k > 0, f"bad k {self.k!r}", "k")
        _check(bool(self.input_fields), "input_fields must be a non-empty list of names", "input_fields")
        _check(bool(self.examples), "examples must be a non-empty list", "examples")
        for i, example in enumerate(self.examples):
            _check(example.source >= 0, "source must be a trainset index", f"examples[{i}]")
            _check(all(f in example.inputs for f in self.input_fields),
                   f"inputs must have the fields {list(self.input_fields)}", f"examples[{i}].inputs")
        texts = [render_inputs(example.inputs, self.input_fields) for example in self.examples]
        _check(len(set(texts)) == len(texts), "two examples have the same inputs", "examples")
        index = self.index
        _check(index.ntotal == len(self.examples),
               f"the index says {index.ntotal} vectors, there are {len(self.examples)} examples",
               "index.ntotal")
        if index.file is not None:
            _check(index.sha256 is not None and len(index.sha256) == 64, "index file without a sha256",
                   "index")
            _check(index.file == Path(index.file).name and index.file not in ("", ".", ".."),
                   f"the index file {index.file!r} must be a plain file name beside the program file",
                   "index.file")
        return texts


def read_state(raw: dict[str, Any], *, base_path: str | None, embedder: Any) -> KNNState:
    """A saved KNN state, ready to search. `embedder`: the one to use instead of finding the saved one by
    name (it must have that name); `base_path`: the folder of the program file, where the index is."""
    _check(raw.get("format") == STATE_FORMAT, f"unknown format {raw.get('format')!r} (this honing-knn reads "
           f"{STATE_FORMAT}); upgrade honing-knn", "format")
    saved: SavedState = structure_state(raw, SavedState, path=WHERE)
    texts = saved.check()
    cached = CachedEmbedder(_embedder(saved.embedder, embedder))
    if cached.dim is not None and cached.dim != saved.dim:
        raise _fail(f"the embedder {cached.name!r} gives vectors of dimension {cached.dim}, the saved index "
                    f"has dimension {saved.dim}", "dim")
    info = saved.index.info()
    if saved.index.file is not None:
        index = _read_index(saved, info, base_path)
    else:
        index = _rebuild_index(saved, info, cached, texts)
    return KNNState(embedder=cached, embedder_state=saved.embedder, input_fields=saved.input_fields,
                    k=saved.k, texts=texts, inputs=[e.inputs for e in saved.examples],
                    sources=[e.source for e in saved.examples], demos=[e.demos for e in saved.examples],
                    index=index, info=info, dim=saved.dim, seed=saved.index.seed)


def _embedder(spec: dict[str, Any], given: Any) -> Any:
    """The embedder the state was built with: found by its saved name and options, or the one given."""
    if given is None:
        options = {key: value for key, value in spec.items() if key != "name"}
        try:
            return resolve_embedder(spec["name"], **options)
        except (UnknownEntry, ConfigurationError) as exc:
            raise _fail(f"cannot find the embedder it was built with ({exc}); pass it: "
                        "KNNProgram(program, embedder=...).load(path)", "embedder") from None
    embedder = resolve_embedder(given)
    if getattr(embedder, "name", None) != spec["name"]:
        raise _fail(f"it was built with the embedder {spec['name']!r}, but this KNNProgram was given "
                    f"{getattr(embedder, 'name', embedder)!r}", "embedder")
    return embedder


def _read_index(saved: SavedState, info: IndexInfo, base_path: str | None) -> Any:
    from honing_knn.index import read_index, set_params

    if base_path is None:
        raise _fail("the program file names an index file, but was not loaded from a file", "index.file")
    assert saved.index.file is not None and saved.index.sha256 is not None  # SavedState.check
    index = read_index(Path(base_path) / saved.index.file, sha256=saved.index.sha256,
                       ntotal=len(saved.examples), dim=saved.dim)
    set_params(index, info)
    return index


def _rebuild_index(saved: SavedState, info: IndexInfo, embedder: CachedEmbedder, texts: list[str]) -> Any:
    from honing_knn.index import build_index

    log.warning("KNN program saved without its FAISS index: rebuilding it from %d examples", len(texts))
    vectors = embedder.embed(texts)
    if vectors.shape[1] != saved.dim:
        raise _fail(f"the embedder gives dimension {vectors.shape[1]}, the file says {saved.dim}", "dim")
    spec = info.factory + (f"|{info.params}" if info.params else "")
    if info.nprobe is not None and not info.params:
        spec = f"{info.factory}|nprobe={info.nprobe}"
    index, _ = build_index(vectors, spec, k=saved.k, seed=saved.index.seed)
    return index


def _fail(message: str, where: str = "") -> LoadError:
    return LoadError(f"KNN state{(' ' + where) if where else ''}: {message}",
                     path=f"{WHERE}{('.' + where) if where else ''}")


def _check(condition: bool, message: str, where: str = "") -> None:
    if not condition:
        raise _fail(message, where)
