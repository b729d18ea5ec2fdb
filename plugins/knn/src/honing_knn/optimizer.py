"""KNNFewShot: at each call, the `k` training examples nearest to the call's inputs become the demos.

Compiling embeds the training examples' input fields once (batched, normalised, cached on disk),
builds a FAISS index over them and returns a `KNNProgram` wrapping a copy of the student. With
``bootstrap=True`` the teacher (default: the student) is run ONCE per training example at compile time,
through core `bootstrap_demos` and with that example's own nearest neighbours as its demos (leave one
out), so every stored example carries the demos of a passing run, intermediate fields such as
``reasoning`` included; serving then costs one embedding and one index search per call, never a
bootstrap (fixing the per-call re-bootstrapping of the reference implementation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
from honing.plugin_api import (
    BudgetExceeded,
    CachedEmbedder,
    CompileRun,
    Example,
    InvalidSetting,
    Module,
    Optimizer,
    OptimizerError,
    bootstrap_demos,
    count,
    effective_max_errors,
    labeled_demos,
    program_inputs,
    resolve_embedder,
    setting,
    to_dict,
)

from honing_knn.program import KNNProgram
from honing_knn.state import KNNState, render_inputs

#: Keys `few_shot_bootstrap_args` may hold: passed to the core's `bootstrap_demos`.
BOOTSTRAP_ARGS = ("max_rounds", "max_errors", "metric_threshold", "retry_temperature")


def _frozen_examples(value: Any) -> Any:
    """A list or tuple of examples as a tuple (settings never change); anything else as given, for the
    check to refuse."""
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _examples_or_none(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (isinstance(value, (str, bytes)) or not hasattr(value, "__len__")):
        raise InvalidSetting(f"{attribute.name} must be a list of hn.Example, got {type(value).__name__}")


def _index_spec(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidSetting(f"{attribute.name} must be 'auto' or a FAISS factory string, got {value!r}")


def _bootstrap_args(settings: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, dict):
        raise InvalidSetting(f"{attribute.name} must be a dict, got {type(value).__name__}")
    unknown = sorted(set(value) - set(BOOTSTRAP_ARGS))
    if unknown:
        hint = (" (k sets how many demos each call gets, and the teacher sees the k nearest labelled "
                "examples)" if set(unknown) & {"max_bootstrapped_demos", "max_labeled_demos"} else "")
        raise InvalidSetting(f"unknown {attribute.name} {unknown}; known: {', '.join(BOOTSTRAP_ARGS)}{hint}")
    if value and not settings.bootstrap:
        raise InvalidSetting(f"{attribute.name} are used only with bootstrap=True")


class KNNFewShot(Optimizer):
    """Each call's k nearest training examples as its demos (retrieved per call, bootstrapped once)."""

    requires_labels = True

    @attrs.frozen
    class Settings:
        """
        :param k: demos per call: the call's k nearest training examples.
        :param trainset: the examples to retrieve from; `compile(..., trainset=...)` overrides it.
        :param embedder: None (the packaged all-MiniLM-L6-v2 sentence-transformers model), a registered
            name (``"sentence-transformers/..."``, ``"openai/text-embedding-3-small"``, ...), a callable
            ``list[str] -> array``, or an embedder object. Recorded by its name.
        :param index: ``"auto"`` (exact search below 100k examples, IVF with a tuned nprobe above) or a
            FAISS factory string, optionally with search parameters: ``"IVF1024,Flat|nprobe=32"``.
        :param bootstrap: demos from passing runs of the teacher (with `metric`; without one every run
            passes) instead of the labelled examples.
        :param metric: judges the teacher's runs when bootstrapping.
        :param few_shot_bootstrap_args: with `bootstrap`, any of max_rounds, max_errors,
            metric_threshold and retry_temperature (the core's `bootstrap_demos`).
        :param seed: seeds the index's training (IVF centroids) and its nprobe tuning.
        """

        k: int = setting(8, check=count(minimum=1, wording="a positive integer"))
        trainset: tuple[Example, ...] | None = setting(None, converter=_frozen_examples,
                                                       check=_examples_or_none, recorded=False)
        embedder: Any = setting(None)
        index: str = setting("auto", check=_index_spec)
        bootstrap: bool = setting(False, converter=bool)
        metric: Any = setting(None, recorded=False)
        few_shot_bootstrap_args: dict[str, Any] = setting(None, converter=to_dict, check=_bootstrap_args)
        seed: int = setting(0)

    def record_parameters(self) -> dict[str, Any]:
        """The settings, with the embedder recorded by its name (it may be a model or a function)."""
        return {**super().record_parameters(), "embedder": _embedder_label(self.settings.embedder)}

    # -- compile --------------------------------------------------------------------------------------
    def compile(self, student: Module, *,  # type: ignore[override]
                trainset: Sequence[Example] | None = None, valset: Sequence[Example] | None = None,
                teacher: Module | None = None, **kwargs: Any) -> Module:
        """A `KNNProgram` wrapping a copy of `student` (a plain program, or a `KNNProgram` to rebuild);
        `trainset` defaults to the one the optimizer was made with."""
        return super().compile(student, trainset=trainset,  # type: ignore[arg-type]
                               valset=valset, teacher=teacher, **kwargs)

    def compile_run(self, student: Module, *,  # type: ignore[override]
                    trainset: Sequence[Example] | None = None, valset: Sequence[Example] | None = None,
                    teacher: Module | None = None, **kwargs: Any) -> CompileRun:
        if trainset is None:
            trainset = self.settings.trainset
        if trainset is None:
            raise OptimizerError("KNNFewShot needs a trainset: KNNFewShot(trainset=...) or "
                                 "compile(program, trainset=...)")
        return super().compile_run(student, trainset=trainset, valset=valset, teacher=teacher, **kwargs)

    def validate(self, student: Module, trainset: Sequence[Example], valset: Sequence[Example] | None,
                 teacher: Module | None) -> None:
        inner = student.program if isinstance(student, KNNProgram) else student
        if isinstance(teacher, KNNProgram):
            teacher = teacher.program
        super().validate(inner, trainset, valset, teacher)

    def optimize(self, program: Module, run: CompileRun) -> Module:
        from honing_knn.index import build_index

        s = self.settings
        spec = s.embedder
        inner = program
        if isinstance(program, KNNProgram):
            inner = program.program
            if spec is None and program._embedder.value is not None:
                spec = program._embedder.value
        teacher = run.teacher.program if isinstance(run.teacher, KNNProgram) else run.teacher
        trainset = run.trainset
        fields = _input_fields(inner, trainset)
        texts = [_key_text(example, fields, i) for i, example in enumerate(trainset)]

        positions: dict[str, int] = {}
        for i, text in enumerate(texts):
            positions.setdefault(text, i)
        keep = sorted(positions.values())
        if len(keep) < len(trainset):
            dropped = len(trainset) - len(keep)
            conflicting = sum(1 for i, t in enumerate(texts) if positions[t] != i
                              and trainset[i].labels() != trainset[positions[t]].labels())
            also = f", {conflicting} of them with different labels" if conflicting else ""
            run.note(f"{dropped} training example(s) repeat the inputs of an earlier one{also}; kept the "
                     f"first of each ({len(keep)} distinct examples)")
        examples = [trainset[i] for i in keep]
        k = s.k
        if k > len(examples):
            run.note(f"k={k} but the trainset has only {len(examples)} distinct examples; each call uses all "
                     f"{len(examples)}")

        embedder = resolve_embedder(spec)
        embedder_state = embedder.to_state() if hasattr(embedder, "to_state") else {"name": embedder.name}
        cached = CachedEmbedder(embedder)
        vectors = cached.embed([texts[i] for i in keep])
        index, info = build_index(vectors, s.index, k=min(k, len(examples)), seed=s.seed)
        if info.nlist is not None:
            measured = (f", leave-one-out recall@{min(k, len(examples))} {info.recall:.3f}"
                        if info.recall else "")
            run.note(f"index {info.factory}: nprobe={info.nprobe}{measured}")

        demos = [_labeled(inner, example, source) for example, source in zip(examples, keep)]
        state = KNNState(embedder=cached, embedder_state=embedder_state, input_fields=fields, k=k,
                         texts=[texts[i] for i in keep],
                         inputs=[{f: ex[f] for f in fields} for ex in examples], sources=keep, demos=demos,
                         index=index, info=info, dim=int(vectors.shape[1]), seed=s.seed)
        if s.bootstrap:
            state = self._bootstrap(run, state, inner, teacher, examples)
        _uncalibrate(run, inner, state)
        return KNNProgram._compiled(inner, state)

    def _bootstrap(self, run: CompileRun, state: KNNState, inner: Module, teacher: Module | None,
                   examples: list[Example]) -> KNNState:
        """Run the teacher once per example, with its labelled nearest neighbours (itself left out) as
        demos; a passing run's calls become that example's demos, a failing one keeps its labels."""
        runner = KNNProgram._compiled((teacher or inner).deepcopy(), state, leave_one_out=True)
        args = {"max_errors": effective_max_errors(None), **self.settings.few_shot_bootstrap_args}
        try:
            result = bootstrap_demos(runner, examples, self.settings.metric, max_demos=len(examples), **args)
        except BudgetExceeded as exc:  # the runs bootstrapped before it are kept; the rest keep their labels
            result = getattr(exc, "partial", None)
            if result is None:
                raise
            run.note(f"the budget ran out after {result.attempts} teacher runs")
        run.count_errors(result.errors)
        # the runner names predictors with its wrapper's prefix; the stored demos use the inner names
        inner_names = {id(p): name for name, p in runner.program.named_predictors()}
        renamed = {name: inner_names[id(p)] for name, p in runner.named_predictors()}
        boot: dict[int, dict[str, list[dict[str, Any]]]] = {}
        for name, items in result.demos.items():
            inner_name = renamed[name]
            for demo in items:
                position = demo["_example"]
                boot.setdefault(position, {}).setdefault(inner_name, []).append(
                    {**demo, "_example": state.sources[position]})
        demos = [boot.get(i, state.demos[i]) for i in range(len(state))]
        failed = len(examples) - len(result.used)
        tail = f"; {failed} failed (they keep their labelled demos)" if failed else ""
        run.note(f"bootstrapped {len(result.used)} of {len(examples)} examples once, at compile time{tail}")
        return attrs.evolve(state, demos=demos)

    # -- loading --------------------------------------------------------------------------------------
    @classmethod
    def load_program(cls, path: Any, student: Module, *, embedder: Any = None) -> KNNProgram:
        """Load a saved KNN program into a copy of `student` (the uncompiled program it was made from)."""
        return KNNProgram(student.deepcopy(), embedder=embedder).load(path)  # type: ignore[return-value]


def _uncalibrate(run: CompileRun, inner: Module, state: KNNState) -> None:
    """Predictors left at decoding "auto" get "score": the same choice scoring (and the same fallbacks
    on models that cannot score), without contextual calibration. Calibration subtracts each label's
    likelihood on a content-free input shown the same demos; with retrieved demos that prior is the
    retrieval's evidence itself, so calibrating cancels it (measured on 10-intent Banking77 with the
    local model, k=8: 0.79 calibrated, 0.89 not). An explicit decoding is left alone."""
    changed = [name for name, p in inner.named_predictors()
               if name in state.managed() and p.decoding == "auto"]
    for name, predictor in inner.named_predictors():
        if name in changed:
            predictor.decoding = "score"
    if changed:
        run.note(f"decoding 'auto' -> 'score' (no calibration against the retrieved demos) for predictor(s) "
                 f"{', '.join(map(repr, changed))}")


def _embedder_label(embedder: Any) -> str:
    if embedder is None:
        return "default"
    if isinstance(embedder, str):
        return embedder
    name = getattr(embedder, "name", None)
    if isinstance(name, str):
        return name
    qualname = getattr(embedder, "__qualname__", type(embedder).__name__)
    return f"callable:{getattr(embedder, '__module__', '?')}.{qualname}"


def _input_fields(program: Module, trainset: list[Example]) -> list[str]:
    fields = program_inputs(program)
    if fields is not None:
        return fields
    keys = {tuple(sorted(example.input_keys or ())) for example in trainset}
    if len(keys) != 1:
        raise OptimizerError("KNNFewShot: the program's forward() takes **kwargs and the training examples "
                             f"have different input keys ({sorted(keys)}); give forward() named parameters")
    return list(next(iter(keys)))


def _key_text(example: Example, fields: list[str], index: int) -> str:
    for name in fields:
        if name not in example:
            raise OptimizerError(f"trainset[{index}] is missing input field {name!r}: KNNFewShot retrieves "
                                 f"examples by {', '.join(fields)}")
        value = example[name]
        if value is None or (isinstance(value, str) and not value.strip()):
            raise OptimizerError(f"trainset[{index}]: input field {name!r} is empty; KNNFewShot retrieves "
                                 f"examples by their inputs ({', '.join(fields)})")
    return render_inputs(example, fields)


def _labeled(program: Module, example: Example, source: int) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for name, predictor in program.named_predictors():
        demos = labeled_demos(predictor, [example])
        if demos:
            out[name] = [{**demo, "_example": source} for demo in demos]
    return out
