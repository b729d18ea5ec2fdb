"""The `honing` command: list optimizers, compile and evaluate programs, inspect and export saved ones.

A user error (bad file, unknown optimizer, wrong field) prints one line and exits 2; `--debug` shows the
traceback. Note: `PROGRAM` arguments (``path.py:attr`` or ``module:attr``) and ``--metric mod:fn``
import and run your Python code, by design — only point them at code you trust. Saved program files
(JSON) are never executed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from honing.errors import HoningError, UserError

DEFAULT_LM = "local/smollm2-135m"

PROGRAM_HELP = ("the program: path/to/file.py:attr or package.module:attr, where attr is a Module or a "
                "function/class returning one. WARNING: this IMPORTS AND RUNS that Python code, like "
                "`python file.py` would, so use only code you trust (saved .json programs are never executed).")


class CLIError(UserError):
    """A command-line mistake."""


# ----------------------------------------------------------------------------------------------------
# resolving user code and data

def import_attr(spec: str, what: str) -> Any:
    """Import `path.py:attr` or `module:attr` (this runs the user's code, on purpose)."""
    if ":" not in spec:
        raise CLIError(f"{what} {spec!r} must look like path/to/file.py:name or package.module:name")
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py") or os.sep in target:
        path = Path(target)
        if not path.exists():
            raise CLIError(f"{what} file {path} does not exist")
        module_name = f"honing_user_{abs(hash(str(path.resolve())))}"
        spec_obj = importlib.util.spec_from_file_location(module_name, path)
        if spec_obj is None or spec_obj.loader is None:
            raise CLIError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec_obj)
        sys.modules[module_name] = module
        sys.path.insert(0, str(path.resolve().parent))
        spec_obj.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            raise CLIError(f"{what}: cannot import module {target!r} ({exc})") from None
    try:
        value = module
        for part in attr.split("."):
            value = getattr(value, part)
    except AttributeError:
        raise CLIError(f"{what}: {target} has no attribute {attr!r}") from None
    return value


def load_program(spec: str) -> Any:
    from honing.modules import Module

    value = import_attr(spec, "PROGRAM")
    if isinstance(value, Module):
        return value
    if callable(value):
        value = value()
        if isinstance(value, Module):
            return value
    raise CLIError(f"PROGRAM {spec!r} is not a honing Module (nor a function returning one)")


def load_metric(spec: str) -> Any:
    from honing.metrics import BUILTIN

    if spec in BUILTIN:
        return BUILTIN[spec]
    if ":" not in spec:
        raise CLIError(f"unknown metric {spec!r}: use one of {', '.join(BUILTIN)} or module:function")
    metric = import_attr(spec, "metric")
    if not callable(metric):
        raise CLIError(f"metric {spec!r} is not callable")
    return metric


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """`key=value` pairs; values are read as JSON when they parse (8, 0.5, true, "x", [1]) else as text."""
    params = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.isidentifier():
            raise CLIError(f"--param {pair!r} must look like name=value")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def _configure_lm(model: str | None) -> Any:
    import honing as hn

    lm = hn.LM(model or os.environ.get("HONING_LM", DEFAULT_LM))
    hn.configure(lm=lm)
    return lm


def _examples(path: str, program: Any) -> list[Any]:
    from honing.datafiles import load_examples
    from honing.modules import program_inputs

    inputs = program_inputs(program)
    if inputs is None:
        raise CLIError("cannot tell the program's input fields from its forward(); give it named parameters")
    return load_examples(path, inputs=inputs)


# ----------------------------------------------------------------------------------------------------
# commands

def cmd_list_optimizers(args: argparse.Namespace) -> int:
    from honing.plugins.registry import optimizer_registry

    registry = optimizer_registry()
    if args.json:
        print(json.dumps(registry.to_json(), indent=2))
        return 0
    entries = registry.entries()
    if not entries:
        print("No optimizers installed. Try: pip install honing-bootstrap")
        return 0
    for entry in entries:
        print(f"{entry.name} ({entry.distribution or '-'} {entry.version or ''}".rstrip() + f"): {entry.summary}")
    return 0


#: compile flags only some optimizers take: flag → the keyword their `optimize` names for it
OPTIONAL_COMPILE_FLAGS = {"storage": "storage", "study": "study_name", "dry_run": "dry_run"}


def _optional_compile_flags(args: argparse.Namespace, optimizer: Any) -> dict[str, Any]:
    """The keywords of the optional flags given; a flag the optimizer does not declare among its
    `compile_options` is refused before any LM call."""
    accepted = optimizer.compile_options
    given = {keyword: getattr(args, flag) for flag, keyword in OPTIONAL_COMPILE_FLAGS.items() if getattr(args, flag)}
    unsupported = ["--" + flag.replace("_", "-") for flag, keyword in OPTIONAL_COMPILE_FLAGS.items()
                   if keyword in given and keyword not in accepted]
    if unsupported:
        raise CLIError(f"{optimizer.name} does not support {', '.join(unsupported)}")
    return given


def cmd_compile(args: argparse.Namespace) -> int:
    from honing.plugins.registry import optimizer_registry

    program = load_program(args.program)
    optimizer_cls = optimizer_registry().get(args.optimizer).obj
    metric = load_metric(args.metric) if args.metric else None
    params = parse_params(args.param or [])
    if args.seed is not None:
        params["seed"] = args.seed
    _configure_lm(args.lm)
    trainset = _examples(args.trainset, program)
    valset = _examples(args.valset, program) if args.valset else None
    try:
        optimizer = optimizer_cls(metric=metric, **params) if metric is not None else optimizer_cls(**params)
    except TypeError as exc:
        raise CLIError(f"{args.optimizer}: {exc}") from None
    kwargs: dict[str, Any] = {}
    if args.run_dir:
        kwargs["run_dir"] = args.run_dir
    if args.resume:
        kwargs["resume"] = True
    kwargs.update(_optional_compile_flags(args, optimizer))
    compiled = optimizer.compile(program, trainset=trainset, valset=valset, **kwargs)
    if args.dry_run:  # the optimizer printed its plan; nothing was compiled, so nothing is saved
        return 0
    compiled.save(args.output)
    record = compiled.compile_record
    score = f", score {record.score:.3f}" if record is not None and record.score is not None else ""
    calls = f", {record.calls} LM calls" if record is not None else ""
    print(f"compiled with {args.optimizer}{score}{calls}; saved to {args.output}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import honing as hn

    program = load_program(args.program)
    if args.load:
        program.load(args.load)
    _configure_lm(args.lm)
    devset = _examples(args.devset, program)
    metric = load_metric(args.metric)
    result = hn.Evaluate(devset=devset, metric=metric, num_threads=args.num_threads,
                         display_progress=not args.quiet, max_errors=args.max_errors)(program)
    if args.json:
        print(json.dumps({"score": result.score, "n": len(result.results), "n_errors": result.n_errors,
                          "usage": result.usage.to_dict()}))
    else:
        print(f"score {result.score:.3f} on {len(result.results)} examples ({result.n_errors} errors, "
              f"{result.usage.calls} LM calls, {result.usage.cache_hits} cached)")
    return 0


def _placeholder_inputs(predictor: Any, given: dict[str, Any]) -> dict[str, Any]:
    return {f.name: given.get(f.name, f"{{{f.name}}}") for f in predictor.signature.input_fields}


def predictors_from_document(doc: Any) -> list[tuple[str, Any]]:
    """Standalone Predict objects for each saved predictor: enough to render or run its prompts
    without the program's code (what `honing inspect` and `honing export` show)."""
    from honing.modules import Predict
    from honing.serialization import signature_from_state

    out = []
    for state in doc.predictors:
        predictor = Predict(signature_from_state(state.signature), decoding=state.decoding, adapter=state.adapter)
        predictor.demos = [dict(d) for d in state.demos]
        out.append((state.name, predictor))
    return out


def _adapter_for(predictor: Any, name: str | None, lm_state: dict[str, Any] | None) -> Any:
    """The adapter the saved predictor would use: named, saved, or its LM's default (by provider)."""
    from honing.plugins.lookup import resolve_adapter

    model = (lm_state or {}).get("model") or os.environ.get("HONING_LM", DEFAULT_LM)

    class _ModelOnly:  # which adapter a model gets by default depends only on its provider
        provider = str(model).split("/", 1)[0]

    return resolve_adapter(name or predictor.adapter, _ModelOnly())


def cmd_inspect(args: argparse.Namespace) -> int:
    from honing.serialization import read_document

    doc = read_document(args.file)
    print(f"{args.file}: program {doc.program}, honing {doc.honing_version}, schema {doc.schema_version}")
    if doc.optimizer is not None:
        rec = doc.optimizer
        score = f"{rec.score:.3f}" if rec.score is not None else "n/a"
        print(f"optimizer {rec.name} (seed {rec.seed}): score {score}, {rec.calls} LM calls, "
              f"{rec.prompt_tokens + rec.completion_tokens} tokens, cost ${rec.cost:.4f}, {rec.wall_time:.1f}s")
        for note in rec.notes:
            print(f"  note: {note}")
    for (name, predictor), state in zip(predictors_from_document(doc), doc.predictors):
        print(f"\n=== predictor {name} ({len(predictor.demos)} demos, decoding {state.decoding}"
              + (f", lm {state.lm.get('model')}" if state.lm else "") + ") ===")
        adapter = _adapter_for(predictor, args.adapter, state.lm)
        request = adapter.format(predictor.signature, predictor.demos, _placeholder_inputs(predictor, {}))
        print(request.text())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from honing.serialization import read_document

    doc = read_document(args.file)
    given = parse_params(args.input or [])
    out = []
    for (name, predictor), state in zip(predictors_from_document(doc), doc.predictors):
        if args.predictor and name != args.predictor:
            continue
        adapter = _adapter_for(predictor, args.adapter, state.lm)
        request = adapter.format(predictor.signature, predictor.demos, _placeholder_inputs(predictor, given))
        if args.format == "messages":
            messages = list(request.messages) if request.messages is not None else [
                {"role": "user", "content": request.prompt}]
            out.append({"predictor": name, "adapter": adapter.name, "messages": messages,
                        **({"stop": list(request.stop)} if request.stop else {})})
        else:
            out.append({"predictor": name, "adapter": adapter.name, "text": request.text()})
    if args.format == "messages":
        print(json.dumps(out if len(out) != 1 else out[0], indent=2, ensure_ascii=False))
    else:
        print("\n\n".join(item["text"] for item in out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="honing", description="Compile language-model programs.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list-optimizers", help="list installed optimizers and the packages providing them")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list_optimizers)

    p = sub.add_parser("compile", help="optimize a program and save it as JSON", description=PROGRAM_HELP)
    p.add_argument("program", help=PROGRAM_HELP)
    p.add_argument("--optimizer", required=True, help="an installed optimizer (see list-optimizers)")
    p.add_argument("--trainset", required=True, help="training examples (.jsonl or .csv)")
    p.add_argument("--valset", help="validation examples (.jsonl or .csv)")
    p.add_argument("--metric", help="exact_match, f1, or module:function / file.py:function")
    p.add_argument("--lm", help=f"model, e.g. openai/gpt-4o-mini (default {DEFAULT_LM} or $HONING_LM)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="optimizer parameter (repeatable)")
    p.add_argument("--seed", type=int, help="the optimizer's seed")
    p.add_argument("--run-dir", help="write the run's event log, plot and summary here")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument("--storage", help="the optimizer's study storage, e.g. postgresql://user:pass@host/db "
                                     "(workers started with the same --storage and --study share one study)")
    p.add_argument("--study", help="the study's name in --storage")
    p.add_argument("--dry-run", action="store_true", help="print what the compile would spend and send no LM call")
    p.add_argument("-o", "--output", required=True, help="where to save the compiled program (.json)")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("evaluate", help="score a program on a devset", description=PROGRAM_HELP)
    p.add_argument("program", help=PROGRAM_HELP)
    p.add_argument("--load", help="a compiled program (.json) to load into PROGRAM first")
    p.add_argument("--devset", required=True)
    p.add_argument("--metric", required=True)
    p.add_argument("--lm")
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--max-errors", type=int)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("inspect", help="show a saved program's prompts as a person reads them")
    p.add_argument("file")
    p.add_argument("--adapter", help="render with this adapter instead of the saved/default one")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("export", help="print exactly what the adapter sends for given inputs")
    p.add_argument("file")
    p.add_argument("--format", choices=("messages", "text"), default="messages")
    p.add_argument("--input", action="append", metavar="FIELD=VALUE", help="an input value (repeatable)")
    p.add_argument("--predictor", help="only this predictor (dotted name)")
    p.add_argument("--adapter", help="render with this adapter instead of the saved/default one")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UserError, HoningError) as exc:
        if args.debug:
            raise
        print(f"honing: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UserError) else 1


if __name__ == "__main__":
    sys.exit(main())
