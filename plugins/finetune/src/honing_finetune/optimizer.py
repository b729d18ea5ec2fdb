"""BootstrapFinetune: train the weights of the student's LM on a teacher's passing traces.

    tuned = BootstrapFinetune(metric=exact, train_kwargs={"epochs": 3}).compile(
        student, trainset=trainset, teacher=fewshot_program)

1. The teacher (a prompted program of the student's shape, e.g. the student compiled by random search;
   the student itself by default) runs over the trainset under `hn.trace()`. Runs that pass the metric
   (every run without one) become training data: each predictor call is one example, formatted exactly
   as the *student* predictor's adapter will send it at inference with the fine-tuned LM (its own
   instruction; its demos unless `exclude_demos`), written as JSONL in the run directory in both chat
   ``messages`` and ``prompt``/``completion`` form.
2. One model is trained per distinct LM (all of its predictors' examples together when `multitask`,
   else one model per predictor, its examples chosen by predictor name, not by position): LoRA on the
   CPU for the embedded local model (written back as a GGUF served by llama.cpp, ``local/<name>``), or
   a hosted fine-tuning job through litellm. `target` trains every predictor towards one model instead
   (a model name such as ``"local/smollm2-135m"`` or ``"openai/gpt-4o-mini-2024-07-18"``, or an `hn.LM`
   carrying an endpoint and key).
3. The returned copy's predictors use the fine-tuned LM; their adapter is pinned to the one the data was
   formatted for (`adapter` chooses another, e.g. ``"transcript_compact"``, the transcript without the
   list of allowed values, which a model fine-tuned on its labels no longer needs), and their demos are
   cleared when `exclude_demos`. The record's `candidates` hold one
   entry per trained model: base model, data size, hyperparameters, loss curve (local), job id (hosted)
   and times; `loss.json`/`loss.png` and `summary.json` are in the run directory.

Unlike the reference implementation, the student is never mutated, per-predictor LMs survive copies,
non-multitask data is matched by predictor name, and any adapter that renders prompts or chat turns
(JSON included) can produce training data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
from honing.plugin_api import (
    LM,
    Adapter,
    CompileRun,
    ConfigurationError,
    InvalidSetting,
    Module,
    Optimizer,
    OptimizerError,
    OptimizerRecord,
    Predict,
    adapter_registry,
    check_examples,
    count,
    default_cache_dir,
    get_engine,
    integer,
    json_safe,
    local_model_name,
    metric_callable,
    models_dir,
    resolve_adapter,
    resolve_model_path,
    setting,
)
from honing.plugin_api import settings as configured  # the hn.configure(...) in effect

from honing_finetune import options
from honing_finetune.data import (
    Traces,
    TrainingExample,
    adapter_label,
    collect_traces,
    is_prompt_adapter,
    make_example,
    shuffled,
    write_jsonl,
)

SUMMARY = "summary.json"
RESULT = "result.json"
#: At most this many points of a loss curve go into the compile record (loss.json has them all).
RECORD_CURVE_POINTS = 100


# ----------------------------------------------------------------------------------------------------
# the checks of its settings (the constructor prefixes "BootstrapFinetune: ")


def _target(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    named = isinstance(value, str) or isinstance(getattr(value, "model", None), str)
    if value is not None and not named:
        raise InvalidSetting(f"{attribute.name} must be a model name such as 'local/smollm2-135m' or "
                             f"'openai/gpt-4o-mini-2024-07-18', or an hn.LM; got {type(value).__name__}")
    if isinstance(value, str) and "/" not in value:
        raise InvalidSetting(f"{attribute.name} {value!r} needs a provider prefix, e.g. 'local/{value}' or "
                             f"'openai/{value}'")


def _adapter(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None or isinstance(value, Adapter):
        return
    if not isinstance(value, str):
        raise InvalidSetting(f"{attribute.name} must be an adapter name such as 'transcript' or an Adapter, "
                             f"got {type(value).__name__}")
    try:
        adapter_registry().get(value)
    except Exception as exc:  # noqa: BLE001 - an unknown name; the registry's message names the known ones
        raise InvalidSetting(f"unknown {attribute.name} {value!r}: {exc}") from None


@attrs.define
class Job:
    """One model to train: the predictors it serves, where it trains, and its data."""

    key: str
    target_lm: Any
    backend: str  # "local" | "hosted"
    predictors: list[tuple[str, Predict]]
    adapters: dict[str, Any]
    settings: dict[str, Any]
    base_path: Path | None = None
    base_name: str = ""
    examples: list[TrainingExample] = attrs.Factory(list)
    data: dict[str, Any] = attrs.Factory(dict)
    result: dict[str, Any] = attrs.Factory(dict)


class BootstrapFinetune(Optimizer):
    """Fine-tune the student's LM on a teacher's passing traces (LoRA on the local model, or a hosted job).

    ``compile(student, trainset=..., teacher=None, run_dir=None, resume=False)``: `run_dir` receives the
    data, loss curve and summary (default: ``<honing cache dir>/finetune/<digest>``); `resume` reuses a
    model an earlier compile in the same `run_dir` trained on the same data and settings.
    """

    requires_labels = False

    @attrs.frozen
    class Settings:
        """
        :param metric: keeps the teacher runs it passes (all runs when None; then the trainset needs no
            labels).
        :param train_kwargs: local LoRA takes `epochs` (3), `learning_rate` (1e-3), `optimizer` ("adamw",
            "adam", "sgd"), `batch_size` (8), `gradient_accumulation_steps` (1), `lora_rank` (16),
            `lora_alpha` (32), `lora_dropout`, `target_modules`, `weight_decay`, `warmup_ratio` (0.1),
            `max_steps`, `max_length`, `tensor_type` ("q8_0", "f16", "f32") and `seed`; hosted jobs take
            `epochs`, `batch_size`, `learning_rate_multiplier`, `suffix`, `seed`, `timeout` and
            `poll_interval` (seconds). Unknown keys, and keys of the other backend, are errors naming them.
        :param target: what to train (see the module docstring); None trains each predictor's own LM.
        :param multitask: one model per LM for all its predictors (else one per predictor).
        :param exclude_demos: train (and then run) without the student's demos.
        :param num_threads: teacher runs at a time.
        :param seed: data order, LoRA initialisation, batches.
        :param adapter: the adapter the data is formatted for and the predictors then use (default: theirs).
        """

        metric: Any = setting(None, check=metric_callable, recorded=False)
        train_kwargs: dict[str, Any] = setting(None, converter=options.check_train_kwargs)
        target: Any = setting(None, check=_target)
        multitask: bool = setting(True, converter=bool)
        exclude_demos: bool = setting(False, converter=bool)
        num_threads: int = setting(1, check=count(minimum=1, wording="a positive integer"), run_neutral=True)
        seed: int = setting(0, check=integer)
        adapter: Any = setting(None, check=_adapter)

    def record_parameters(self) -> dict[str, Any]:
        # an Adapter object is recorded by its name, like an adapter given by name
        adapter = self.settings.adapter
        return {**super().record_parameters(),
                "adapter": adapter_label(adapter) if isinstance(adapter, Adapter) else adapter}

    def run_parameters(self) -> dict[str, Any]:
        # how long to wait for a hosted job does not change what it trains: resuming with a longer timeout
        # is the point of resuming a job that timed out
        parameters = super().run_parameters()
        parameters["train_kwargs"] = {k: v for k, v in parameters["train_kwargs"].items()
                                      if k not in options.WAITING}
        return parameters

    # -- the compile ----------------------------------------------------------------------------------
    def optimize(self, program: Module, run: CompileRun) -> Module:
        s = self.settings
        if s.metric is not None:
            check_examples(program, run.trainset, "trainset", labels=True)
        if run.valset is not None:
            run.note("the valset is not used: BootstrapFinetune trains on the trainset's passing traces")
        jobs = self.plan(program)
        runner = run.teacher if run.teacher is not None else program
        traces = collect_traces(runner, run.trainset, s.metric, num_threads=s.num_threads,
                                max_errors=configured.current().max_errors)
        if not traces.passed:
            raise OptimizerError(
                f"BootstrapFinetune: no teacher run passed the metric, so there is nothing to train on: "
                f"tried {traces.tried} trainset examples ({traces.summary()}). Check the teacher and the "
                "metric, give a stronger teacher (e.g. the student compiled with few-shot demos), or pass "
                "metric=None to train on every run")
        run.note(f"teacher: {traces.summary()}")
        for job in jobs:
            job.examples = self.examples_for(job, traces)
        directory = run.log.dir if run.log is not None else self.default_run_dir(jobs)
        with _writing_into(directory):
            started = time.perf_counter()
            for job in jobs:
                job.examples = shuffled(job.examples, job.settings["seed"])
                job.data = write_jsonl(job.examples, directory / job.key)
            self.train(jobs, directory, run)
            self.install(program, jobs, run)
            candidates = tuple(self.summarize(job) for job in jobs)
            summary = {"optimizer": self.name, "parameters": self.record_parameters(),
                       "teacher": traces.summary(),
                       "jobs": [{**job.result, "key": job.key, "data": job.data} for job in jobs],
                       "seconds": round(time.perf_counter() - started, 2)}
            (directory / SUMMARY).write_text(json.dumps(summary, indent=2, default=str) + "\n",
                                             encoding="utf-8")
        program.compile_record = OptimizerRecord(name=self.name, candidates=candidates,
                                                 errors=len(traces.errors))
        return program

    # -- planning -------------------------------------------------------------------------------------
    def plan(self, program: Module) -> list[Job]:
        """Group the student's predictors into training jobs and check each job can run, before any call."""
        s = self.settings
        current = configured.current()
        target = self._target_lm()
        groups: dict[tuple[str, ...], list[tuple[str, Predict]]] = {}
        targets: dict[tuple[str, ...], Any] = {}
        for name, predictor in program.named_predictors():
            lm = predictor.lm or current.lm
            if lm is None and target is None:
                raise OptimizerError(f"BootstrapFinetune: predictor {name!r} has no LM and none is "
                                     "configured; set predictor.lm, hn.configure(lm=...), or pass target=")
            goal = target if target is not None else lm
            key = _lm_key(goal) + (() if s.multitask else (name,))
            groups.setdefault(key, []).append((name, predictor))
            targets[key] = goal
        jobs = []
        for i, (key, members) in enumerate(groups.items()):
            goal = targets[key]
            backend = _backend(goal)
            label = _slug(goal.model) + ("" if s.multitask else "-" + _slug(members[0][0]))
            settings = options.resolve(s.train_kwargs, backend, goal.model, s.seed)
            adapters = {name: resolve_adapter(s.adapter or p.adapter or current.adapter, goal)
                        for name, p in members}
            job = Job(f"{i}-{label}", goal, backend, members, adapters, settings)
            if backend == "local":
                self._check_local(job)
            jobs.append(job)
        return jobs

    def _target_lm(self) -> Any:
        target = self.settings.target
        if target is None or not isinstance(target, str):
            return target
        try:
            return LM(target)
        except ConfigurationError as exc:
            raise OptimizerError(f"BootstrapFinetune: bad target {target!r}: {exc}") from None

    def _check_local(self, job: Job) -> None:
        from honing_finetune.gguf_io import GGUFError
        from honing_finetune.lora import base_weights

        job.base_name = local_model_name(job.target_lm.model)
        try:
            job.base_path = resolve_model_path(job.base_name)
        except ConfigurationError as exc:
            raise OptimizerError(f"BootstrapFinetune: local training needs the base model as a local GGUF "
                                 f"file: {exc}") from None
        with job.base_path.open("rb") as handle:
            if handle.read(4) != b"GGUF":
                raise OptimizerError(f"BootstrapFinetune: local training needs a GGUF base model; "
                                     f"{str(job.base_path)!r} is not a GGUF file")
        try:
            base_weights(job.base_path)  # read once now: a model that cannot be trained fails before any call
        except GGUFError as exc:
            raise OptimizerError(f"BootstrapFinetune: cannot train {job.base_name!r} locally: "
                                 f"{exc}") from None
        for name, adapter in job.adapters.items():
            if not is_prompt_adapter(adapter):
                engine = get_engine(job.base_path)
                try:
                    engine.render_chat([{"role": "user", "content": "x"}])
                except ConfigurationError as exc:
                    raise OptimizerError(f"BootstrapFinetune: predictor {name!r} uses the "
                                         f"{adapter_label(adapter)!r} adapter, which needs a chat template: "
                                         f"{exc}") from None

    # -- data -----------------------------------------------------------------------------------------
    def examples_for(self, job: Job, traces: Traces) -> list[TrainingExample]:
        template = end = None
        if job.backend == "local" and not all(is_prompt_adapter(a) for a in job.adapters.values()):
            from honing_finetune.lora import base_weights

            assert job.base_path is not None
            template = get_engine(job.base_path).render_chat
            base = base_weights(job.base_path)[0]
            end = base.token_text(base.eos_token_id) if base.eos_token_id is not None else ""
        members = dict(job.predictors)
        examples = []
        for run in traces.passed:
            for record in run.records:
                predictor = members.get(record.predictor_name)
                if predictor is None:
                    continue
                adapter = job.adapters[record.predictor_name]
                chat_template = template if not is_prompt_adapter(adapter) else None
                examples.append(make_example(adapter, predictor, record.predictor_name, record, run.index,
                                             exclude_demos=self.settings.exclude_demos,
                                             chat_template=chat_template, end_of_turn=end or ""))
        if not examples:
            names = ", ".join(repr(n) for n, _ in job.predictors)
            raise OptimizerError(f"BootstrapFinetune: no passing teacher run called predictor(s) {names}; "
                                 f"nothing to train {job.target_lm.model!r} on")
        return examples

    def default_run_dir(self, jobs: Sequence[Job]) -> Path:
        """``<honing cache dir>/finetune/<digest>``: the digest of the settings and data, so the same compile
        always writes to the same place (and a different one never overwrites it)."""
        h = hashlib.sha256(json.dumps(self.record_parameters(), sort_keys=True, default=str).encode())
        for job in jobs:
            h.update(job.key.encode())
            for e in job.examples:
                h.update(json.dumps(e.chat_row(), sort_keys=True).encode())
        return default_cache_dir() / "finetune" / h.hexdigest()[:16]

    # -- training -------------------------------------------------------------------------------------
    def train(self, jobs: Sequence[Job], directory: Path, run: CompileRun) -> None:
        from honing_finetune.hosted import HostedJob

        pending: list[tuple[Job, HostedJob]] = []
        for job in jobs:
            if run.resume and self._reuse(job, directory, run):
                continue
            if job.backend == "hosted":
                hosted = HostedJob(target_lm=job.target_lm, chat_file=Path(job.data["chat_file"]),
                                   settings=job.settings, desc=f"fine-tune {job.target_lm.model}",
                                   key=self._job_key(job))
                if run.resume and hosted.attach():
                    run.note(f"job {job.key}: polling the job {hosted.job_id} started earlier instead of a "
                             "new one")
                else:
                    hosted.start()
                pending.append((job, hosted))
        for job in jobs:
            if job.backend == "local" and not job.result:
                from honing_finetune.lora import train_local

                assert job.base_path is not None
                job.result = {"backend": "local", **train_local(
                    base_path=job.base_path, base_name=job.base_name, examples=job.examples,
                    settings=job.settings, out_dir=directory / job.key, models_dir=models_dir(),
                    data_sha256=job.data["sha256"], desc=f"LoRA {job.base_name}", resume=run.resume)}
                if job.result.get("reused_adapter"):
                    run.note(f"job {job.key}: merged the adapter trained earlier "
                             f"({job.result['reused_adapter']}) without training again")
                self._save_result(job, directory)
        for job, hosted in pending:
            job.result = {"backend": "hosted", "base_model": job.target_lm.model,
                          "examples": len(job.examples), **hosted.wait()}
            self._save_result(job, directory)

    @staticmethod
    def _job_key(job: Job) -> dict[str, Any]:
        """What a saved result (or a started hosted job) must match to be reused with `resume` (how long to
        wait for a hosted job is not part of it: resuming with a longer timeout is the point)."""
        settings = {k: v for k, v in json_safe(job.settings).items() if k not in options.WAITING}
        return {"data_sha256": job.data["sha256"], "settings": settings, "target": job.target_lm.model}

    def _save_result(self, job: Job, directory: Path) -> None:
        record = {**self._job_key(job), "result": job.result}
        (directory / job.key / RESULT).write_text(json.dumps(record, indent=2, default=str) + "\n",
                                                  encoding="utf-8")

    def _reuse(self, job: Job, directory: Path, run: CompileRun) -> bool:
        """With `resume`, a job that finished in this run directory on the same data and settings is not
        trained again (a local model must still be in the models directory)."""
        path = directory / job.key / RESULT
        if not path.is_file():
            return False
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            return False
        if {k: saved.get(k) for k in ("data_sha256", "settings", "target")} != self._job_key(job):
            return False
        result = saved.get("result") or {}
        if job.backend == "local" and not (models_dir() / f"{result.get('model')}.gguf").is_file():
            return False
        job.result = result
        run.note(f"job {job.key}: reused the model trained earlier in {directory} ({result.get('model')})")
        return True

    # -- installing the result ------------------------------------------------------------------------
    def install(self, program: Module, jobs: Sequence[Job], run: CompileRun) -> None:
        s = self.settings
        for job in jobs:
            model = job.result["model"]
            lm = _derived_lm(job.target_lm, model if job.backend == "hosted" else f"local/{model}")
            for name, predictor in job.predictors:
                predictor.lm = lm
                if isinstance(s.adapter, Adapter):
                    predictor.adapter = s.adapter
                elif s.adapter is not None or predictor.adapter is None or isinstance(predictor.adapter, str):
                    predictor.adapter = adapter_label(job.adapters[name])
                if s.exclude_demos:
                    predictor.demos = []
            names = ", ".join(n for n, _ in job.predictors)
            run.note(f"{names}: now {lm.model}; {self._describe(job)}")
        if s.exclude_demos:
            run.note("demos cleared (exclude_demos=True): the fine-tuned model was trained without them")

    def _describe(self, job: Job) -> str:
        r = job.result
        if job.backend == "local":
            curve = r.get("loss") or [[0, float("nan")]]
            s = job.settings
            return (f"LoRA r={s['lora_rank']} on {r.get('examples')} examples from {job.base_name}, "
                    f"{r.get('steps')} steps ({r.get('epochs_run')} epochs, {s['optimizer']}, "
                    f"lr {s['learning_rate']:g}), "
                    f"loss {curve[0][1]:.4f} -> {curve[-1][1]:.4f}; data, loss.json and loss.png in "
                    f"{Path(job.data['chat_file']).parent}")
        return (f"hosted job {r.get('job_id')} on {r.get('examples')} examples from {job.target_lm.model}; "
                f"data in {Path(job.data['chat_file']).parent}")

    def summarize(self, job: Job) -> dict[str, Any]:
        """The compile record's entry for one trained model."""
        r = dict(job.result)
        entry: dict[str, Any] = {
            "key": job.key,
            "backend": job.backend,
            "predictors": [n for n, _ in job.predictors],
            "adapter": sorted({adapter_label(a) for a in job.adapters.values()}),
            "base_model": job.target_lm.model,
            "model": (f"local/{r['model']}" if job.backend == "local" else r["model"]),
            "examples": len(job.examples),
            "data": {"chat_file": job.data["chat_file"], "prompt_file": job.data["prompt_file"],
                     "sha256": job.data["sha256"]},
            "hyperparameters": r.get("hyperparameters", json_safe(job.settings)),
        }
        if job.backend == "local":
            curve = r.get("loss") or []
            stride = max(1, -(-len(curve) // RECORD_CURVE_POINTS))
            entry.update({
                "sha256": r.get("sha256"),
                "path": r.get("path"),
                "steps": r.get("steps"),
                "prompt_tokens": r.get("prompt_tokens"),
                "answer_tokens": r.get("answer_tokens"),
                "trainable_parameters": r.get("trainable_parameters"),
                "loss": [p for i, p in enumerate(curve) if i % stride == 0 or i == len(curve) - 1],
                "roundtrip": r.get("roundtrip"),
            })
        else:
            entry.update({"job_id": r.get("job_id"), "file_id": r.get("file_id"),
                          "statuses": r.get("statuses"), "trained_tokens": r.get("trained_tokens")})
        entry["seconds"] = r.get("seconds")
        return entry


# ----------------------------------------------------------------------------------------------------
# helpers

_directory_locks: dict[Path, threading.Lock] = {}
_directory_locks_guard = threading.Lock()


@contextlib.contextmanager
def _writing_into(directory: Path) -> Iterator[None]:
    """Make `directory` and hold it for one compile at a time in this process: two identical compiles
    share the default directory, and one must not read the training file the other is rewriting."""
    directory.mkdir(parents=True, exist_ok=True)
    with _directory_locks_guard:
        lock = _directory_locks.setdefault(directory.resolve(), threading.Lock())
    with lock:
        yield


def _lm_key(lm: Any) -> tuple[str, ...]:
    return (str(getattr(lm, "model", repr(lm))), str(getattr(lm, "api_base", None) or ""))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "model"


def _backend(lm: Any) -> str:
    from honing_finetune.hosted import PROVIDERS

    model = str(getattr(lm, "model", ""))
    provider = getattr(lm, "provider", None) or model.split("/", 1)[0]
    if provider == "local":
        return "local"
    if provider in PROVIDERS:
        return "hosted"
    raise OptimizerError(
        f"BootstrapFinetune cannot train {model!r}: local training needs a local GGUF model "
        f"('local/<name>'), hosted training a provider with litellm's fine-tuning API "
        f"({', '.join(PROVIDERS)}). Pass target='local/smollm2-135m' (or a hosted model) to choose what to "
        "train")


def _derived_lm(target_lm: Any, model: str) -> Any:
    """The fine-tuned model as an LM with the target's settings (endpoint, key, cache, temperature)."""
    copy = getattr(target_lm, "copy", None)
    if callable(copy):
        return copy(model=model)
    return LM(model)
