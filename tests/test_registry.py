import pytest

from echobench.errors import EchobenchError
from echobench.registry import Registry


def test_lazy_entry_resolves_and_same_object_may_register_again():
    reg = Registry("thing")
    reg.add("od", "collections:OrderedDict")
    import collections

    assert reg.get("od") is collections.OrderedDict
    reg.add("od", collections.OrderedDict)  # the module registering itself again is fine


def test_lazy_entry_then_same_target_registration_is_allowed():
    reg = Registry("thing")
    reg.add("od", "collections:OrderedDict")
    import collections

    reg.add("od", collections.OrderedDict)
    assert reg.get("od") is collections.OrderedDict


def test_duplicate_name_is_an_error():
    reg = Registry("thing")
    reg.add("a", int)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", float)


def test_unknown_name_suggests_closest():
    reg = Registry("method")
    for n in ["co-teaching", "co-dis", "ce"]:
        reg.add(n, n.upper)
    with pytest.raises(EchobenchError) as exc:
        reg.get("coteaching")
    assert "Did you mean 'co-teaching'" in str(exc.value)
    assert "echobench ls methods" in str(exc.value)
