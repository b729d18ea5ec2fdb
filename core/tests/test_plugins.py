"""The plugin manager, the registries built from it, and the `honing.optimizers.<Name>` lookup."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pluggy
import pytest

import honing.optimizers
from honing._version import __version__
from honing.errors import PluginError, UnknownOptimizer, UserError
from honing.plugins import (
    InvalidPlugin,
    UnknownEntry,
    adapter_registry,
    embedder_registry,
    get_plugin_manager,
    hookimpl,
    make_plugin_manager,
    optimizer_registry,
    reset_plugin_manager,
)
from honing.plugins import manager as manager_module
from honing.plugins import registry as registry_module


class LabeledFewShot:
    """Few-shot prompts from the labeled examples.

    A longer description that is not part of the summary.
    """


class Other:
    summary = "Summary from the class attribute."


class Undocumented:
    pass


class FakePlugin:
    def __init__(self, *classes: type, **named: type) -> None:
        self.classes = classes
        self.named = named

    @hookimpl
    def register_optimizers(self, register):
        for cls in self.classes:
            register(cls)
        for name, cls in self.named.items():
            register(cls, name=name)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("HONING_DISABLE_PLUGINS", raising=False)


@pytest.fixture
def pm() -> pluggy.PluginManager:
    return make_plugin_manager(load_entrypoints=False)


@pytest.fixture
def global_pm(pm):
    """Make `pm` the process-wide manager for the test, then put the previous one back."""
    previous = reset_plugin_manager(pm)
    yield pm
    reset_plugin_manager(previous)


@pytest.fixture
def core_adapters(monkeypatch):
    """Stand in for the core's adapters so these tests do not depend on the real ones."""
    from honing.plugins import builtins as core_builtins

    def install(adapters: dict) -> None:
        monkeypatch.setattr(core_builtins, "builtin_adapters", lambda: dict(adapters))

    install({})
    return install


@pytest.fixture
def make_dist(tmp_path, monkeypatch):
    """Install a throwaway distribution with one ``honing`` entry point, found through sys.path."""
    created: list[str] = []

    def make(ep_name: str, source: str, *, version: str = "1.2.3") -> tuple[str, str]:
        uid = uuid.uuid4().hex[:8]
        module = f"honing_fake_{ep_name}_{uid}"
        dist = f"honing-fake-{ep_name}-{uid}"
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{module}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[honing]\n{ep_name} = {module}\n")
        created.append(module)
        return module, dist

    monkeypatch.syspath_prepend(str(tmp_path))
    yield make
    for module in created:
        sys.modules.pop(module, None)


OPTIMIZER_PLUGIN = """
    from honing.plugins import hookimpl

    class FakeOptimizer:
        '''Does nothing, for tests.'''

    @hookimpl
    def register_optimizers(register):
        register(FakeOptimizer)
"""


# Registration


def test_register_defaults_name_and_takes_summary(pm):
    pm.register(FakePlugin(LabeledFewShot, Other, Undocumented, Custom=LabeledFewShot))
    registry = optimizer_registry(pm)

    assert registry.names() == ["Custom", "LabeledFewShot", "Other", "Undocumented"]
    assert registry.get("LabeledFewShot").obj is LabeledFewShot
    assert registry.get("Custom").obj is LabeledFewShot
    assert registry.get("LabeledFewShot").summary == "Few-shot prompts from the labeled examples."
    assert registry.get("Other").summary == "Summary from the class attribute."
    assert registry.get("Undocumented").summary == ""
    assert "Other" in registry and "Nope" not in registry
    assert [e.name for e in registry.entries()] == registry.names()


def test_summary_ignores_an_inherited_docstring(pm):
    class Sub(LabeledFewShot):
        pass

    pm.register(FakePlugin(Sub))
    assert optimizer_registry(pm).get("Sub").summary == ""


def test_hand_registered_plugin_has_no_distribution(pm):
    pm.register(FakePlugin(LabeledFewShot), name="by-hand")
    entry = optimizer_registry(pm).get("LabeledFewShot")

    assert (entry.distribution, entry.version, entry.plugin_name) == (None, None, "by-hand")
    assert entry.origin == "-"
    assert optimizer_registry(pm).to_json() == [
        {"name": "LabeledFewShot", "distribution": None, "version": None,
         "summary": "Few-shot prompts from the labeled examples."}
    ]


def test_entry_point_plugin_records_distribution_and_version(make_dist):
    module, dist = make_dist("fakeopt", OPTIMIZER_PLUGIN, version="2.5.0")
    pm = make_plugin_manager()

    entry = optimizer_registry(pm).get("FakeOptimizer")
    assert entry.obj is sys.modules[module].FakeOptimizer
    assert (entry.distribution, entry.version, entry.plugin_name) == (dist, "2.5.0", "fakeopt")
    assert entry.origin == f"{dist} 2.5.0"
    assert entry.summary == "Does nothing, for tests."


def test_builtins_are_distribution_honing(pm, core_adapters):
    class TranscriptAdapter:
        """The fake built-in adapter."""

    core_adapters({"fake-transcript": TranscriptAdapter})
    entry = adapter_registry(pm).get("fake-transcript")

    assert entry.obj is TranscriptAdapter
    assert (entry.distribution, entry.version) == ("honing", __version__)
    assert entry.plugin_name == "honing.builtins"
    assert entry.summary == "The fake built-in adapter."


def test_real_core_adapters_register_as_honing(pm):
    import honing.adapters

    registry = adapter_registry(pm)
    assert set(honing.adapters.builtin_adapters()) <= set(registry.names())
    assert {e.distribution for e in registry} == {"honing"}


def test_adapters_and_embedders_register_by_name(pm, core_adapters):

    class Plugin:
        @hookimpl
        def register_adapters(self, register):
            register("fake-json", dict)

        @hookimpl
        def register_embedders(self, register):
            register("fake/", lambda name: ("prefix", name))
            register("fake/exact", lambda name: ("exact", name))

    pm.register(Plugin())
    assert adapter_registry(pm).get("fake-json").obj is dict
    embedders = embedder_registry(pm)
    assert embedders.resolve("fake/exact").obj("fake/exact") == ("exact", "fake/exact")
    assert embedders.resolve("fake/small-v2").obj("fake/small-v2") == ("prefix", "fake/small-v2")
    with pytest.raises(UnknownEntry, match="no embedder named 'other/x'"):
        embedders.resolve("other/x")


# Refusals


def test_duplicate_name_is_refused_naming_both_plugins(pm):
    class Twin:
        pass

    pm.register(FakePlugin(Twin), name="first")
    pm.register(FakePlugin(LabeledFewShot, Twin=Other), name="second")
    with pytest.raises(PluginError, match="registered twice") as info:
        optimizer_registry(pm)
    assert "'Twin'" in str(info.value)
    assert "plugin 'first'" in str(info.value) and "plugin 'second'" in str(info.value)


def test_duplicate_across_distribution_and_hand_plugin_names_the_distribution(make_dist):
    _, dist = make_dist("fakeopt", OPTIMIZER_PLUGIN)
    pm = make_plugin_manager()

    class FakeOptimizer:
        pass

    pm.register(FakePlugin(FakeOptimizer))
    with pytest.raises(PluginError) as info:
        optimizer_registry(pm)
    message = str(info.value)
    assert f"{dist} 1.2.3 (plugin 'fakeopt')" in message
    assert "<FakePlugin object>" in message
    assert "HONING_DISABLE_PLUGINS=fakeopt" in message


def test_same_plugin_registering_a_name_twice_is_refused(pm):
    pm.register(FakePlugin(LabeledFewShot, LabeledFewShot=Other), name="twice")
    with pytest.raises(PluginError, match="plugin 'twice'.*registers the optimizer 'LabeledFewShot' twice"):
        optimizer_registry(pm)


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((LabeledFewShot(),), {}, "takes an optimizer class"),
    ((LabeledFewShot,), {"name": "not valid"}, "public Python identifiers"),
    ((LabeledFewShot,), {"name": "_Hidden"}, "public Python identifiers"),
    ((LabeledFewShot,), {"name": "Optimizer"}, "reserved"),
])
def test_wrong_kind_of_registration_is_refused(pm, args, kwargs, message):
    class Plugin:
        @hookimpl
        def register_optimizers(self, register):
            register(*args, **kwargs)

    pm.register(Plugin(), name="bad")
    with pytest.raises(PluginError, match=f"plugin 'bad'.*in register_optimizers: .*{message}"):
        optimizer_registry(pm)


def test_adapter_factory_must_be_callable(pm, core_adapters):

    class Plugin:
        @hookimpl
        def register_adapters(self, register):
            register("broken", "not a factory")

    pm.register(Plugin(), name="bad")
    with pytest.raises(PluginError, match="'broken' was registered with 'not a factory'"):
        adapter_registry(pm)


def test_a_failing_hook_is_reported_with_its_plugin(pm):
    class Plugin:
        @hookimpl
        def register_optimizers(self, register):
            raise RuntimeError("boom")

    pm.register(Plugin(), name="crashy")
    with pytest.raises(PluginError, match="'crashy'.*failed in register_optimizers: RuntimeError: boom"):
        optimizer_registry(pm)


def test_register_after_the_hook_returned_is_refused(pm):
    class Plugin:
        @hookimpl
        def register_optimizers(self, register):
            self.register = register

    plugin = Plugin()
    pm.register(plugin, name="late")
    optimizer_registry(pm)
    with pytest.raises(PluginError, match="after its register_optimizers hook returned"):
        plugin.register(LabeledFewShot)


def test_check_pending_rejects_a_misspelt_hookimpl(pm):
    class Misspelt:
        @hookimpl
        def register_optimizer(self, register):  # missing "s"
            pass

    pm.register(Misspelt())
    with pytest.raises(pluggy.PluginValidationError, match="register_optimizer"):
        pm.check_pending()


def test_misspelt_entry_point_plugin_fails_loading_with_a_hint(make_dist):
    make_dist("typo", """
        from honing.plugins import hookimpl

        @hookimpl
        def register_optimizer(register):
            pass
    """)
    with pytest.raises(InvalidPlugin, match="register_optimizer") as info:
        make_plugin_manager()
    assert isinstance(info.value, PluginError)
    assert isinstance(info.value, pluggy.PluginValidationError)
    assert "HONING_DISABLE_PLUGINS=typo" in str(info.value)


def test_an_entry_point_that_fails_to_import_is_named(make_dist):
    module, dist = make_dist("broken", "raise ImportError('needs torch')\n")
    with pytest.raises(PluginError, match="plugin 'broken'") as info:
        make_plugin_manager()
    message = str(info.value)
    assert module in message and dist in message and "needs torch" in message
    assert "HONING_DISABLE_PLUGINS=broken" in message


# Disabling plugins


def test_disable_env_blocks_an_entry_point(make_dist, monkeypatch):
    module, _ = make_dist("fakeopt", OPTIMIZER_PLUGIN)
    monkeypatch.setenv("HONING_DISABLE_PLUGINS", "something-else, fakeopt")
    pm = make_plugin_manager()

    assert pm.is_blocked("fakeopt")
    assert module not in sys.modules  # never even imported
    assert "FakeOptimizer" not in optimizer_registry(pm)


def test_blocked_argument_blocks_an_entry_point(make_dist):
    module, _ = make_dist("fakeopt", OPTIMIZER_PLUGIN)
    pm = make_plugin_manager(blocked=["fakeopt"])
    assert pm.is_blocked("fakeopt") and module not in sys.modules

    assert "FakeOptimizer" in optimizer_registry(make_plugin_manager())


def test_disabling_makes_a_broken_plugin_skippable(make_dist, monkeypatch):
    make_dist("broken", "raise ImportError('needs torch')\n")
    monkeypatch.setenv("HONING_DISABLE_PLUGINS", "broken")
    make_plugin_manager()


def test_the_builtins_cannot_be_disabled(monkeypatch):
    monkeypatch.setenv("HONING_DISABLE_PLUGINS", "honing.builtins")
    pm = make_plugin_manager(load_entrypoints=False)
    assert pm.has_plugin("honing.builtins")


# Unknown names


def test_unknown_optimizer_lists_installed_and_suggests_the_close_match(pm):
    pm.register(FakePlugin(LabeledFewShot, Other))
    with pytest.raises(UnknownOptimizer) as info:
        optimizer_registry(pm).get("LabeledFewshot")
    assert isinstance(info.value, UserError) and isinstance(info.value, ImportError)
    message = str(info.value)
    assert "no optimizer named 'LabeledFewshot' is installed" in message
    assert "did you mean 'LabeledFewShot'?" in message
    assert "(installed: LabeledFewShot, Other)" in message
    assert "pip install" not in message


def test_missing_official_optimizer_suggests_pip_install(pm, monkeypatch):
    monkeypatch.setattr(registry_module, "distribution_installed", lambda name: False)
    registry = optimizer_registry(pm)

    with pytest.raises(UnknownOptimizer, match="pip install honing-labeled") as info:
        registry.get("LabeledFewShot")
    assert "(installed: none)" in str(info.value)
    with pytest.raises(UnknownOptimizer, match="mean 'BootstrapFewShot'.*pip install honing-bootstrap"):
        registry.get("BootstrapFewshot")


def test_official_plugin_installed_but_disabled_says_so(monkeypatch):
    monkeypatch.setattr(registry_module, "distribution_installed", lambda name: True)
    monkeypatch.setenv("HONING_DISABLE_PLUGINS", "labeled")
    registry = optimizer_registry(make_plugin_manager(load_entrypoints=False))

    with pytest.raises(UnknownOptimizer) as info:
        registry.get("LabeledFewShot")
    message = str(info.value)
    assert "honing-labeled, which is installed but did not register it" in message
    assert "plugins disabled" in message and "labeled" in message
    assert "pip install honing-labeled" not in message


def test_unknown_adapter_is_a_key_error_with_a_readable_message(pm, core_adapters):
    core_adapters({"fake-chat": dict})
    with pytest.raises(UnknownEntry) as info:
        adapter_registry(pm).get("fake-caht")
    assert isinstance(info.value, KeyError) and isinstance(info.value, UserError)
    assert str(info.value) == ("no adapter named 'fake-caht' is installed (installed: fake-chat); "
                              "did you mean 'fake-chat'?")


# honing.optimizers.<Name>


def test_optimizers_module_looks_names_up_in_the_registry(global_pm):
    global_pm.register(FakePlugin(LabeledFewShot, Other))

    from honing.optimizers import LabeledFewShot as found

    assert found is LabeledFewShot
    assert honing.optimizers.Other is Other
    assert {"LabeledFewShot", "Other", "Optimizer"} <= set(dir(honing.optimizers))
    assert "importlib" not in dir(honing.optimizers)


def test_optimizers_module_unknown_names(global_pm):
    global_pm.register(FakePlugin(LabeledFewShot))

    with pytest.raises(UnknownOptimizer, match="did you mean 'LabeledFewShot'"):
        honing.optimizers.LabeledFewshot  # noqa: B018
    with pytest.raises(UnknownOptimizer, match="no optimizer named 'Missing'"):
        from honing.optimizers import Missing  # noqa: F401
    with pytest.raises(AttributeError) as info:
        honing.optimizers._private  # noqa: B018
    assert not isinstance(info.value, UnknownOptimizer)


def test_optimizers_module_reexports_the_base_class():
    import honing.optimizers.base as base

    assert honing.optimizers.Optimizer is base.Optimizer


# The process-wide manager


def test_importing_loads_no_plugins():
    code = ("import honing.plugins, honing.optimizers, honing.plugins.manager as m; "
            "assert m._pm is None, 'built at import'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_get_plugin_manager_is_built_once_across_threads(monkeypatch):
    calls = []

    def slow_make():
        calls.append(1)
        time.sleep(0.05)
        return make_plugin_manager(load_entrypoints=False)

    monkeypatch.setattr(manager_module, "make_plugin_manager", slow_make)
    previous = reset_plugin_manager()
    try:
        results = []
        threads = [threading.Thread(target=lambda: results.append(get_plugin_manager())) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(calls) == 1
        assert len(results) == 8 and all(r is results[0] for r in results)
        assert get_plugin_manager() is results[0]
        reset_plugin_manager()
        assert get_plugin_manager() is not results[0]
    finally:
        reset_plugin_manager(previous)


def test_a_plugin_asking_for_the_manager_while_loading_is_refused(monkeypatch):
    monkeypatch.setattr(manager_module, "make_plugin_manager", get_plugin_manager)
    previous = reset_plugin_manager()
    try:
        with pytest.raises(PluginError, match="while being loaded"):
            get_plugin_manager()
    finally:
        reset_plugin_manager(previous)

