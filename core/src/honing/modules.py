"""Modules: programs made of predictors. `Predict` is the one LM call; `ChainOfThought` adds reasoning.

A Module finds its predictors by walking its attributes (sub-modules, lists, dicts), naming each by its
dotted attribute path (``hop.0.predict``; a bare Predict is ``self``). Those names are the keys of saved
programs and of trace records, so they must be stable: they depend only on attribute names and order.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import inspect
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from honing import settings, tracing
from honing.data import Example, Prediction
from honing.errors import ConfigurationError, InputError
from honing.plugins.lookup import resolve_adapter
from honing.serialization import load_program, save_program
from honing.signatures import Field, Signature, coerce_input, ensure_signature

# id(predictor) -> dotted name, set by the outermost Module call so nested predictors know their name.
_names: contextvars.ContextVar[dict[int, str] | None] = contextvars.ContextVar("honing_names", default=None)

# id(predictor) -> demos to use for calls inside a `call_demos` block instead of `predictor.demos`.
_demo_overrides: contextvars.ContextVar[dict[int, list[dict[str, Any]]] | None] = contextvars.ContextVar(
    "honing_demo_overrides", default=None)

#: Keyword arguments that people pass to Predict because an article said Predict trains weights.
_TRAINING_KWARGS = {"optimizer", "learning_rate", "lr", "epochs", "weight_decay", "momentum", "betas",
                    "loss", "train_kwargs", "batch_size"}

DECODINGS = ("auto", "generate", "grammar", "score", "calibrated")


class Module:
    """Base class of programs. Subclass it, create predictors in `__init__`, call them in `forward`."""

    #: What an optimizer wrote about how it compiled this program (an OptimizerRecord), or None.
    compile_record: Any = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _names.get() is not None:
            return self.forward(*args, **kwargs)
        token = _names.set({id(p): name for name, p in self.named_predictors()})
        try:
            return self.forward(*args, **kwargs)
        finally:
            _names.reset(token)

    # -- predictors ---------------------------------------------------------------------------------
    def named_predictors(self) -> list[tuple[str, Predict]]:
        """Every predictor reachable from this module, with its stable dotted name."""
        found: list[tuple[str, Predict]] = []
        seen: set[int] = set()
        _walk(self, "", found, seen)
        return found

    def predictors(self) -> list[Predict]:
        return [p for _, p in self.named_predictors()]

    def named_submodules(self) -> list[tuple[str, Module]]:
        """Every module (itself included, as ``self``) with its dotted path."""
        found: list[tuple[str, Module]] = [("self", self)]
        seen = {id(self)}

        def visit(value: Any, path: str) -> None:
            for name, child in _children(value):
                child_path = f"{path}.{name}" if path else name
                if isinstance(child, Module) and id(child) not in seen:
                    seen.add(id(child))
                    found.append((child_path, child))
                    visit(child, child_path)
                elif isinstance(child, (list, tuple, dict)) and id(child) not in seen:
                    seen.add(id(child))
                    visit(child, child_path)

        visit(self, "")
        return found

    def input_names(self) -> list[str] | None:
        """The input field names this program takes, or None when they cannot be known.

        The one way a program declares its inputs (optimizers check examples against it, the CLI reads
        it). The default reads the parameters `forward` names; a module whose forward takes ``**inputs``
        for inner programs (an ensemble, a retrieval wrapper) overrides this.
        """
        try:
            params = inspect.signature(self.forward).parameters.values()
        except (TypeError, ValueError):
            return None
        if any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params):
            return None
        return [p.name for p in params]

    def prefetch(self, inputs: Sequence[Mapping[str, Any]]) -> None:
        """Prepare for many calls at once, before they run one by one (Evaluate calls it with its whole
        devset). A program that can batch work ahead, like embedding every query for a KNN lookup,
        overrides this; the default does nothing."""

    # -- copies -------------------------------------------------------------------------------------
    def deepcopy(self) -> Module:
        """A deep copy that shares LM objects (they hold caches and connections) but nothing else."""
        memo: dict[int, Any] = {}
        for predictor in self.predictors():
            if predictor.lm is not None:
                memo[id(predictor.lm)] = predictor.lm
        return copy.deepcopy(self, memo)

    def reset(self) -> Module:
        """Clear every predictor's demos and the compile record, in place; returns self."""
        for predictor in self.predictors():
            predictor.demos = []
        self.compile_record = None
        return self

    # -- optimizer-owned extra state -------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        """JSON-able state beyond the predictors' (overridden by modules that have some, e.g. KNN)."""
        return {}

    def load_extra_state(self, state: dict[str, Any], *, base_path: str | None = None) -> None:
        if state:
            raise InputError(f"{type(self).__name__} has no extra state to load, but the file has some")

    # -- files --------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the program's learned state (instructions, demos, LMs, optimizer record) as JSON."""
        save_program(self, path)

    def load(self, path: str | os.PathLike[str], *, allow_endpoints: bool = False) -> Module:
        """Load state saved from a program of the same shape; returns self. Nothing is executed.

        A file that points an LM at another endpoint (`api_base`, headers, ...) is refused unless
        `allow_endpoints=True`: a downloaded program must not be able to send your API key elsewhere.
        """
        load_program(self, path, allow_endpoints=allow_endpoints)
        return self


def _children(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Module):
        for name, child in vars(value).items():
            if name != "compile_record" and not name.startswith("__"):
                yield name, child
    elif isinstance(value, (list, tuple)):
        for i, child in enumerate(value):
            yield str(i), child
    elif isinstance(value, dict):
        for key, child in value.items():
            yield str(key), child


def _walk(value: Any, path: str, found: list[tuple[str, Predict]], seen: set[int]) -> None:
    """Depth-first over attributes, lists and dicts; each object visited once (cycles are safe)."""
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, Module):
        if isinstance(value, Predict):
            found.append((path or "self", value))
            return
    for name, child in _children(value):
        if isinstance(child, (Module, list, tuple, dict)):
            _walk(child, f"{path}.{name}" if path else name, found, seen)


class Predict(Module):
    """One LM call: fill the signature's outputs from its inputs.

    State an optimizer may change: `signature` (its instruction), `demos` (records of input and output
    values shown before the query) and `lm` (None means the configured default). `decoding` chooses how
    closed outputs (Literal, enum, bool) are produced on models that support it: "auto" (calibrated
    choice scoring on the local model), "generate", "grammar", "score" or "calibrated".
    """

    def __init__(self, signature: Any, *, lm: Any = None, adapter: Any = None, decoding: str = "auto",
                 temperature: float | None = None, max_tokens: int | None = None, **kwargs: Any) -> None:
        training = sorted(set(kwargs) & _TRAINING_KWARGS)
        if training:
            raise TypeError(
                f"Predict() got {', '.join(training)}: Predict does not train weights. Prompts are optimized by "
                "optimizers such as BootstrapFewShotWithRandomSearch; weights are trained by the BootstrapFinetune "
                "optimizer (pip install honing-finetune): "
                "BootstrapFinetune(metric, train_kwargs={'optimizer': 'adam', 'learning_rate': 1e-4})"
                ".compile(program, trainset=trainset)"
            )
        if kwargs:
            raise TypeError(f"Predict() got unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
        self.signature: type[Signature] = ensure_signature(signature)
        self.demos: list[dict[str, Any]] = []
        self.lm = lm
        self.adapter = adapter
        self.decoding = decoding
        self.temperature = temperature
        self.max_tokens = max_tokens
        #: How each output field was actually produced in the latest call (e.g. {"intent": "calibrated"}),
        #: saved with the program so a reader knows which decoding its scores were measured with.
        self.decoding_used: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Predict({self.signature!r}, demos={len(self.demos)})"

    def input_names(self) -> list[str]:
        return [f.name for f in self.signature.input_fields]

    def forward(self, **inputs: Any) -> Prediction:
        values = self._check_inputs(inputs)
        lm = self.lm or settings.current().lm
        if lm is None:
            raise ConfigurationError(
                "no LM configured: call hn.configure(lm=hn.LM('local/smollm2-135m')) or pass lm= to the predictor"
            )
        current = settings.current()
        adapter = resolve_adapter(self.adapter or current.adapter, lm)
        sampling = current.sampling or {}
        overrides = _demo_overrides.get()
        demos = overrides.get(id(self), self.demos) if overrides else self.demos
        outputs, meta = adapter.run(lm, self.signature, demos, values, decoding=self.decoding,
                                    temperature=sampling.get("temperature", self.temperature),
                                    max_tokens=self.max_tokens, rollout=sampling.get("rollout"))
        self.decoding_used = dict(meta.get("decoding") or {}) if isinstance(meta.get("decoding"), dict) else {
            f.name: str(meta.get("decoding")) for f in self.signature.output_fields}
        prediction = Prediction.from_outputs(outputs, meta)
        tracing.record_call(self.name_in_program(), self, values, outputs)
        return prediction

    def __call__(self, *args: Any, **kwargs: Any) -> Prediction:
        if args:
            raise TypeError(f"{self!r} takes keyword arguments only, e.g. predictor(text='...')")
        return super().__call__(**kwargs)

    def name_in_program(self) -> str:
        names = _names.get() or {}
        return names.get(id(self), "self")

    def _check_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        expected = {f.name: f for f in self.signature.input_fields}
        missing = [n for n in expected if n not in inputs]
        extra = [n for n in inputs if n not in expected]
        where = f"{self.signature.__name__} (predictor {self.name_in_program()!r})"
        if missing:
            raise InputError(f"missing input field(s) {', '.join(map(repr, missing))} for {where}; "
                             f"expected: {', '.join(expected)}")
        if extra:
            raise InputError(f"unexpected input field(s) {', '.join(map(repr, extra))} for {where}; "
                             f"expected: {', '.join(expected)}")
        return {name: coerce_input(field, inputs[name]) for name, field in expected.items()}


class ChainOfThought(Module):
    """A Predict that first writes its reasoning (a `reasoning` output placed before the others)."""

    def __init__(self, signature: Any, *, reasoning_desc: str = "think step by step", **predict_kwargs: Any) -> None:
        base = ensure_signature(signature)
        reasoning = Field("reasoning", "output", str, reasoning_desc, "Reasoning")
        self.predict = Predict(base.prepend_output(reasoning), **predict_kwargs)

    def input_names(self) -> list[str]:
        return self.predict.input_names()

    def forward(self, **inputs: Any) -> Prediction:
        return self.predict(**inputs)


@contextlib.contextmanager
def named_calls(program: Module) -> Iterator[None]:
    """Make predictor calls inside the block report names relative to `program`."""
    token = _names.set({id(p): name for name, p in program.named_predictors()})
    try:
        yield
    finally:
        _names.reset(token)


@contextlib.contextmanager
def call_demos(demos: dict[Predict, list[dict[str, Any]]]) -> Iterator[None]:
    """Use these demos for these predictors' calls inside the block, without touching the predictors.

    Per-call demos (e.g. nearest neighbours of the query) go through here, so concurrent calls of one
    program in several threads never see each other's demos.
    """
    merged = dict(_demo_overrides.get() or {})
    merged.update({id(p): list(d) for p, d in demos.items()})
    token = _demo_overrides.set(merged)
    try:
        yield
    finally:
        _demo_overrides.reset(token)


def program_inputs(program: Module) -> list[str] | None:
    """The input field names `program` declares (`Module.input_names`), or None when unknown."""
    return program.input_names()


def as_example(value: Any, *, index: int | None = None) -> Example:
    """Accept an Example (or a mapping, with a clear error if it has no inputs marked)."""
    if isinstance(value, Example):
        return value
    where = f"example {index}" if index is not None else "example"
    raise InputError(f"{where} is a {type(value).__name__}, expected hn.Example(...).with_inputs(...)")
