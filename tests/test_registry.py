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
