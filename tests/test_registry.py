"""Registry behaviour: registration, base-class check, duplicates, lookup hints, dotted paths, build."""
from __future__ import annotations

import sys
import types

import pytest
import torch

from e3relax.registry import BLOCKS, MODELS, Registry, RegistryError, snake_case


class Base:
    pass


@pytest.fixture
def reg():
    return Registry("widgets", Base)


def test_snake_case():
    assert snake_case("GaussianRBF") == "gaussian_rbf"
    assert snake_case("PaiNNMessage") == "pai_nn_message"
    assert snake_case("LatticeAtomInteraction") == "lattice_atom_interaction"
    assert snake_case("Dummy") == "dummy"


def test_register_default_name_and_alias(reg):
    @reg.register(aliases=("tiny",))
    class TinyWidget(Base):
        def __init__(self, size: int = 1):
            self.size = size

    assert reg.names() == ["tiny_widget"]
    assert reg.get("tiny_widget") is TinyWidget
    assert reg.get("tiny") is TinyWidget
    assert "tiny" in reg and "tiny_widget" in reg and "other" not in reg
    assert TinyWidget.registry_name == "tiny_widget"


def test_register_checks_base_class(reg):
    with pytest.raises(RegistryError, match="must subclass .*Base"):
        @reg.register()
        class NotAWidget:  # noqa: F841
            pass


def test_register_rejects_duplicates(reg):
    @reg.register("w")
    class A(Base):
        pass

    with pytest.raises(RegistryError, match="'w' is already registered"):
        @reg.register("w")
        class B(Base):  # noqa: F841
            pass

    with pytest.raises(RegistryError, match="already registered"):
        @reg.register("other", aliases=("w",))
        class C(Base):  # noqa: F841
            pass


def test_lookup_suggests_close_names_and_lists_registered(reg):
    @reg.register("gaussian_rbf")
    class G(Base):
        pass

    @reg.register("bessel_rbf")
    class Bs(Base):
        pass

    with pytest.raises(RegistryError) as err:
        reg.get("gausian_rbf")
    msg = str(err.value)
    assert "Did you mean 'gaussian_rbf'" in msg
    assert "Registered widgets: bessel_rbf, gaussian_rbf" in msg


def test_dotted_path_loads_user_class(reg, monkeypatch):
    mod = types.ModuleType("user_widgets_mod")

    class UserWidget(Base):
        def __init__(self, width: int):
            self.width = width

    class NotWidget:
        pass

    mod.UserWidget = UserWidget
    mod.NotWidget = NotWidget
    monkeypatch.setitem(sys.modules, "user_widgets_mod", mod)
    assert reg.get("user_widgets_mod.UserWidget") is UserWidget
    w = reg.build({"name": "user_widgets_mod.UserWidget", "width": 3})
    assert w.width == 3
    with pytest.raises(RegistryError, match="must subclass"):
        reg.get("user_widgets_mod.NotWidget")
    with pytest.raises(RegistryError, match="has no attribute 'Missing'"):
        reg.get("user_widgets_mod.Missing")
    with pytest.raises(RegistryError, match="cannot import module 'no_such_mod_xyz'"):
        reg.get("no_such_mod_xyz.Thing")


def test_build_fills_context_only_where_accepted(reg):
    @reg.register("a")
    class A(Base):
        def __init__(self, hidden_channels: int, num_rbf: int = 8):
            self.hidden_channels, self.num_rbf = hidden_channels, num_rbf

    @reg.register("b")
    class B(Base):
        def __init__(self, scale: float = 1.0):
            self.scale = scale

    a = reg.build("a", hidden_channels=16, num_rbf=4, unrelated=1)
    assert (a.hidden_channels, a.num_rbf) == (16, 4)
    a2 = reg.build({"name": "a", "num_rbf": 2}, hidden_channels=16, num_rbf=4)
    assert a2.num_rbf == 2, "explicit spec keys win over context"
    b = reg.build({"name": "b"}, hidden_channels=16)
    assert b.scale == 1.0
    assert reg.build(b) is b, "a built object passes through"


def test_build_errors_name_the_component(reg):
    @reg.register("a")
    class A(Base):
        def __init__(self, hidden_channels: int):
            self.hidden_channels = hidden_channels

    with pytest.raises(RegistryError, match=r"widgets 'a' \(.*A\): unknown keyword\(s\) hiden_channels"):
        reg.build({"name": "a", "hiden_channels": 3})
    with pytest.raises(RegistryError, match=r"widgets 'a' .*missing required keyword\(s\) hidden_channels"):
        reg.build("a")
    with pytest.raises(RegistryError, match="has no 'name' key"):
        reg.build({"hidden_channels": 3})
    with pytest.raises(RegistryError, match="unknown widgets 'zzz'"):
        reg.build("zzz")


def test_global_registries_use_torch_module_bases():
    with pytest.raises(RegistryError, match="must subclass torch.nn.modules.module.Module"):
        @BLOCKS.register("definitely_not_a_module_xyz")
        class Plain:  # noqa: F841
            pass
    with pytest.raises(RegistryError, match="must subclass e3relax.model_base.RelaxModel"):
        @MODELS.register("not_a_relax_model_xyz")
        class PlainModule(torch.nn.Module):  # noqa: F841
            pass
