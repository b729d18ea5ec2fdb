"""`Example` (a training or evaluation record) and `Prediction` (what a program returns).

Both are read-only mappings with attribute access. An Example knows which of its keys are inputs
(`with_inputs`); the rest are labels. They compare by value and round-trip through JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from honing.errors import InputError


class Example(Mapping[str, Any]):
    """A record of named values: ``Example(text="...", intent="pin_blocked").with_inputs("text")``."""

    __slots__ = ("_store", "_input_keys")

    def __init__(self, base: Mapping[str, Any] | None = None, **values: Any) -> None:
        store = dict(base or {})
        store.update(values)
        for key in store:
            if not isinstance(key, str):
                raise InputError(f"example keys must be strings, got {key!r}")
        object.__setattr__(self, "_store", store)
        input_keys = base._input_keys if isinstance(base, Example) else None
        object.__setattr__(self, "_input_keys", input_keys)

    # -- mapping and attribute access --------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._store[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._store)

    def __len__(self) -> int:
        return len(self._store)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self._store[name]
        except KeyError:
            have = ", ".join(self._store) or "none"
            raise AttributeError(f"{type(self).__name__} has no field {name!r} (fields: {have})") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only; use .copy({name}=...)")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Example):
            return self._store == other._store
        if isinstance(other, Mapping):
            return self._store == dict(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(json.dumps(self._store, sort_keys=True, default=str))

    # -- copy and pickle: the slots are set with object.__setattr__, as in __init__ ----------------
    def __getstate__(self) -> dict[str, Any]:
        slots = [s for cls in type(self).__mro__ for s in getattr(cls, "__slots__", ())]
        return {s: getattr(self, s) for s in slots if hasattr(self, s)}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self._store.items())
        inputs = f", inputs={sorted(self._input_keys)}" if self._input_keys is not None else ""
        return f"{type(self).__name__}({body}{inputs})"

    # -- inputs and labels ------------------------------------------------------------------------
    @property
    def input_keys(self) -> frozenset[str] | None:
        return self._input_keys

    def with_inputs(self, *keys: str) -> Example:
        """A copy that marks `keys` as the inputs (the other keys become labels)."""
        missing = [k for k in keys if k not in self._store]
        if missing:
            raise InputError(f"with_inputs: {', '.join(map(repr, missing))} not in example (fields: {', '.join(self._store)})")
        new = self.copy()
        object.__setattr__(new, "_input_keys", frozenset(keys))
        return new

    def inputs(self) -> Example:
        """The input values only (an error if `with_inputs` was never called)."""
        if self._input_keys is None:
            raise InputError(
                f"example {self!r:.120} has no input keys; call .with_inputs('field', ...) when building it"
            )
        out = Example({k: v for k, v in self._store.items() if k in self._input_keys})
        object.__setattr__(out, "_input_keys", self._input_keys)
        return out

    def labels(self) -> Example:
        """The values that are not inputs."""
        keys = self._input_keys or frozenset()
        return Example({k: v for k, v in self._store.items() if k not in keys})

    def copy(self, **updates: Any) -> Example:
        new = type(self)(self._store, **updates)
        object.__setattr__(new, "_input_keys", self._input_keys)
        return new

    def without(self, *keys: str) -> Example:
        new = type(self)({k: v for k, v in self._store.items() if k not in keys})
        if self._input_keys is not None:
            object.__setattr__(new, "_input_keys", self._input_keys - set(keys))
        return new

    def toDict(self) -> dict[str, Any]:  # noqa: N802 - DSPy users reach for this name
        return dict(self._store)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._store)

    # -- JSON ---------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """``{"data": {...}, "inputs": [...] | null}``: enough to rebuild the example exactly."""
        inputs = sorted(self._input_keys) if self._input_keys is not None else None
        return {"data": dict(self._store), "inputs": inputs}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Example:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("data"), Mapping):
            raise InputError(f"{cls.__name__}.from_json expects {{'data': {{...}}, 'inputs': [...] | null}}, "
                             f"got {raw!r:.120}")
        example = cls(raw["data"])
        if raw.get("inputs") is not None:
            example = example.with_inputs(*raw["inputs"])
        return example


class Prediction(Example):
    """The outputs of a program call. `meta` holds how they were produced (decoding, raw text)."""

    __slots__ = ("meta",)

    def __init__(self, base: Mapping[str, Any] | None = None, **values: Any) -> None:
        super().__init__(base, **values)
        object.__setattr__(self, "meta", {})

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> Prediction:
        pred = cls(outputs)
        pred.meta.update(meta or {})
        return pred
