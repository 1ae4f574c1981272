import pytest

from pipeline.errors import RegistryError
from pipeline.registry import Registry


def test_register_get_meta_and_errors():
    things = Registry("thing")

    @things.register("b", input_kind="pooled")
    def build_b():
        return "b"

    things.add("a", lambda: "a")
    assert things.names() == ["b", "a"] and "a" in things and len(things) == 2
    assert things.get("b")() == "b" and things.meta("b") == {"input_kind": "pooled"}
    with pytest.raises(RegistryError, match=r"unknown thing 'c'; known: a, b"):
        things.get("c")
    with pytest.raises(RegistryError, match="already registered"):
        things.add("a", None)


def test_typed_meta_families_and_broken_plugins(monkeypatch):
    import importlib.metadata
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Meta:
        kind: str

    calls = []

    def resolve(rest):
        calls.append(rest)
        if rest == "bad":
            raise RegistryError("no such lib model 'bad'")
        return (lambda: rest), {"kind": "image"}

    things = Registry("thing", meta_type=Meta, plugins="stpipe.test-group")
    monkeypatch.setattr(
        importlib.metadata, "entry_points",
        lambda group: [importlib.metadata.EntryPoint("broken", "no_such_module_xyz", group)],
    )  # fmt: skip
    things.add("a", None, kind="video")
    things.add_family("lib", resolve, summary="any lib model")
    assert things.meta("a") == Meta("video")
    with pytest.raises(RegistryError, match="bad metadata"):
        things.add("b", None, colour="red")
    assert things.get("lib:x")() == "x" and things.meta("lib:x").kind == "image"
    things.get("lib:x")
    assert calls == ["x"]  # resolved once, then cached
    assert things.names() == ["a"] and things.families() == {"lib": "any lib model"}
    with pytest.raises(RegistryError, match="no such lib model 'bad'"):
        things.get("lib:bad")
    # the broken plug-in is reported, the rest works
    assert "ModuleNotFoundError" in things.plugin_errors["broken"]
    with pytest.raises(RegistryError, match=r"known: a; or lib:NAME \(any lib model\); plug-in broken failed to load"):
        things.get("zzz")
