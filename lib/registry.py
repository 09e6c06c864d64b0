"""Registries: one per kind of component (blocks, models, heads, losses, importers, graphs).

A component is a class registered under a snake_case name::

    from e3relax.registry import BLOCKS

    @BLOCKS.register()                 # name "my_block" from the class name
    class MyBlock(torch.nn.Module): ...

    @BLOCKS.register("gauss", aliases=("gaussian",))
    class GaussianThing(torch.nn.Module): ...

``Registry.get`` accepts a registered name, an alias, or a dotted import path
(``my_pkg.blocks.MyBlock``) so a user's own class plugs in without editing the toolkit.
``Registry.build`` turns a spec (``"name"`` or ``{"name": ..., **kwargs}``) into an instance,
filling shared context (``hidden_channels=...``) only where the constructor accepts it.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import re
from typing import Any, Callable, Iterator, Mapping

__all__ = [
    "Registry",
    "RegistryError",
    "snake_case",
    "BLOCKS",
    "MODELS",
    "HEADS",
    "LOSSES",
    "IMPORTERS",
    "GRAPHS",
]


class RegistryError(KeyError):
    """Raised for unknown names, duplicates, wrong base classes and bad build specs."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


def snake_case(name: str) -> str:
    """``PaiNNMessage`` -> ``pai_nn_message``; ``E3Relax`` -> ``e3_relax``; ``RBF`` -> ``rbf``."""
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    return s.lower()


class Registry:
    """A named collection of classes of one kind.

    Args:
        kind: what is registered ("blocks", "models", ...), used in messages.
        base: classes must subclass this (checked lazily when ``base`` is a callable returning
            the class, so the registry module need not import torch).
    """

    def __init__(
        self,
        kind: str,
        base: type | Callable[[], type] | None = None,
        modules: tuple[str, ...] = (),
    ) -> None:
        self.kind = kind
        self._base = base
        self._modules = modules  # imported on first lookup so built-in components are registered
        self._loaded = not modules
        self._classes: dict[str, type] = {}
        self._aliases: dict[str, str] = {}

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for m in self._modules:
                importlib.import_module(m)

    # ------------------------------------------------------------------ registration
    @property
    def base(self) -> type | None:
        if self._base is None or isinstance(self._base, type):
            return self._base
        self._base = self._base()
        return self._base

    def register(self, name: str | None = None, *, aliases: tuple[str, ...] | list[str] = ()):
        """Class decorator registering ``cls`` under ``name`` (default: snake_case class name)."""

        def deco(cls: type) -> type:
            self._load()
            key = name or snake_case(cls.__name__)
            if not isinstance(cls, type):
                raise RegistryError(f"{self.kind}: only classes can be registered, got {cls!r}")
            base = self.base
            if base is not None and not issubclass(cls, base):
                raise RegistryError(
                    f"{self.kind}: {cls.__qualname__} must subclass {base.__module__}.{base.__qualname__} "
                    f"to be registered as '{key}'"
                )
            for k in (key, *aliases):
                if k in self._classes or k in self._aliases:
                    other = self._classes.get(k) or self._classes[self._aliases[k]]
                    raise RegistryError(
                        f"{self.kind}: name '{k}' is already registered to "
                        f"{other.__module__}.{other.__qualname__}; choose another name"
                    )
            self._classes[key] = cls
            for a in aliases:
                self._aliases[a] = key
            cls.registry_name = key
            return cls

        return deco

    # ------------------------------------------------------------------ lookup
    def names(self) -> list[str]:
        """Registered names (aliases not included), sorted."""
        self._load()
        return sorted(self._classes)

    def __contains__(self, name: object) -> bool:
        self._load()
        return isinstance(name, str) and (name in self._classes or name in self._aliases)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._classes)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"

    def get(self, name: str) -> type:
        """The class for a registered name, an alias, or a dotted path ``pkg.module.Class``."""
        if not isinstance(name, str):
            raise RegistryError(f"{self.kind}: a name must be a string, got {name!r}")
        self._load()
        if name in self._classes:
            return self._classes[name]
        if name in self._aliases:
            return self._classes[self._aliases[name]]
        if "." in name:
            return self._import(name)
        known = self.names() + sorted(self._aliases)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise RegistryError(
            f"unknown {self.kind} '{name}'.{hint} Registered {self.kind}: {', '.join(self.names()) or '(none)'}. "
            f"A dotted path such as 'my_pkg.module.MyClass' loads your own class."
        )

    def _import(self, path: str) -> type:
        module_name, _, attr = path.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise RegistryError(f"{self.kind}: cannot import module '{module_name}' for '{path}': {exc}") from exc
        try:
            cls = getattr(module, attr)
        except AttributeError as exc:
            raise RegistryError(f"{self.kind}: module '{module_name}' has no attribute '{attr}'") from exc
        base = self.base
        if base is not None and isinstance(cls, type) and not issubclass(cls, base):
            raise RegistryError(
                f"{self.kind}: '{path}' must subclass {base.__module__}.{base.__qualname__}"
            )
        return cls

    # ------------------------------------------------------------------ building
    def build(self, spec: Any, **context: Any) -> Any:
        """Instantiate a component from a spec.

        Args:
            spec: a registered name / dotted path, a mapping ``{"name": ..., **kwargs}``, or an
                already-built object (returned unchanged).
            **context: shared values (``hidden_channels``, ``num_rbf``, ...) passed only to
                constructors that accept a parameter of that name. Explicit spec keys win.

        Raises:
            RegistryError: naming the component when a keyword is unknown or a required one is
                missing.
        """
        if isinstance(spec, str):
            name, kwargs = spec, {}
        elif isinstance(spec, Mapping):
            if "name" not in spec:
                raise RegistryError(f"{self.kind}: spec {dict(spec)!r} has no 'name' key")
            kwargs = {k: v for k, v in spec.items() if k != "name"}
            name = spec["name"]
        elif self.base is not None and isinstance(spec, self.base):
            return spec
        elif callable(spec) and not isinstance(spec, type):
            return spec
        else:
            raise RegistryError(f"{self.kind}: cannot build from {spec!r}; give a name or a mapping with 'name'")
        cls = self.get(name)
        params = inspect.signature(cls.__init__).parameters
        accepted = {p for p, v in params.items() if p != "self" and v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)}
        takes_var_kw = any(v.kind == v.VAR_KEYWORD for v in params.values())
        unknown = sorted(set(kwargs) - accepted) if not takes_var_kw else []
        if unknown:
            raise RegistryError(
                f"{self.kind} '{name}' ({cls.__qualname__}): unknown keyword(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(sorted(accepted)) or '(none)'}"
            )
        full = {k: v for k, v in context.items() if k in accepted and k not in kwargs}
        full.update(kwargs)
        missing = [
            p for p, v in params.items()
            if p != "self" and v.default is inspect.Parameter.empty
            and v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY) and p not in full
        ]
        if missing:
            raise RegistryError(
                f"{self.kind} '{name}' ({cls.__qualname__}): missing required keyword(s) {', '.join(missing)}"
            )
        try:
            return cls(**full)
        except TypeError as exc:
            raise RegistryError(f"{self.kind} '{name}' ({cls.__qualname__}): {exc}") from exc


def _module_base() -> type:
    import torch

    return torch.nn.Module


def _model_base() -> type:
    from e3relax.model_base import RelaxModel

    return RelaxModel


def _importer_base() -> type:
    from e3relax.datasets.importers.base import Importer

    return Importer


def _graph_base() -> type:
    from e3relax.graph.base import GraphBuilder

    return GraphBuilder


class ModelRegistry(Registry):
    """The model registry: a spec may carry ``prior: <PRIORS spec>``, built and attached to the model
    (``model.set_prior``) after the model itself."""

    def build(self, spec: Any, **context: Any) -> Any:
        if isinstance(spec, Mapping) and spec.get("prior") is not None:
            prior = spec["prior"]
            model = super().build({k: v for k, v in spec.items() if k != "prior"}, **context)
            model.set_prior(PRIORS.build(prior))
            return model
        if isinstance(spec, Mapping) and "prior" in spec:
            spec = {k: v for k, v in spec.items() if k != "prior"}
        return super().build(spec, **context)


BLOCKS = Registry("blocks", _module_base, modules=("e3relax.nn",))
MODELS = ModelRegistry("models", _model_base, modules=("e3relax.models",))
PRIORS = Registry("priors", _module_base, modules=("e3relax.priors",))
HEADS = Registry("heads", _module_base, modules=("e3relax.nn",))
LOSSES = Registry("losses", _module_base, modules=("e3relax.losses", "e3relax.nn"))
IMPORTERS = Registry("importers", _importer_base, modules=("e3relax.datasets.importers",))
GRAPHS = Registry("graphs", _graph_base, modules=("e3relax.graph",))
