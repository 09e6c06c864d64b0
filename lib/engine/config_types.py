"""Type checks of a run config, naming the dotted key of a wrong value.

:func:`check_types` checks (and normalises) every key of :data:`e3relax.engine.config.DEFAULTS`
against the type of its default: ``optim.lr: fast`` fails as ``optim.lr: expected a number, got
'fast'`` instead of deep inside the optimiser. :func:`check_spec_types` does the same for the
keyword arguments of a free-form ``model`` / ``loss`` spec, from the annotations and defaults of
the registered class's constructor. Numbers written as strings (YAML 1.1 reads ``1e-4`` as one)
become floats; integral floats of integer keys become ints.
"""
from __future__ import annotations

import inspect
import re
from typing import Any, Callable, Mapping

__all__ = ["check_types", "check_spec_types"]

#: keys that may be null (None disables them or means "default"), with the type of their other values
NULLABLE = {"init_from": str, "data.val_batch_size": int, "data.max_val_structures": int,
            "optim.grad_clip": float, "schedule.early_stop_patience": int, "checkpoint.every_steps": int,
            "checkpoint.every_minutes": float, "distributed.backend": str, "distributed.master_port": int,
            "distributed.nproc_per_node": int}
#: keys checked elsewhere or free in type
UNCHECKED = {"amp", "data.train", "data.val", "hooks", "compile_kernels"}
_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list"}


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _coerce(value: Any, kind: type) -> tuple[bool, Any]:
    """``(ok, normalised value)`` of ``value`` read as ``kind``."""
    if kind is bool:
        return isinstance(value, bool), value
    if isinstance(value, bool):
        return False, value
    if kind is int:
        if isinstance(value, int):
            return True, value
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        return False, value
    if kind is float:
        if isinstance(value, (int, float)):
            return True, float(value)
        if isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if kind is list:
        return isinstance(value, (list, tuple)), list(value) if isinstance(value, (list, tuple)) else value
    return isinstance(value, kind), value


def _check_one(key: str, value: Any, kinds: tuple[type, ...], nullable: bool, error: Callable) -> Any:
    if value is None:
        if nullable:
            return None
        raise error(f"{key}: expected {' or '.join(_NAMES[k] for k in kinds)}, got null", key)
    for kind in kinds:
        ok, out = _coerce(value, kind)
        if ok:
            return out
    raise error(f"{key}: expected {' or '.join(_NAMES[k] for k in kinds)}"
                f"{' (or null)' if nullable else ''}, got {_describe(value)}", key)


def check_types(config: dict[str, Any], defaults: Mapping[str, Any], *, skip: tuple[str, ...] = (),
                error: Callable = ValueError, _prefix: str = "") -> None:
    """Check every key of ``config`` that ``defaults`` knows, in place (values normalised).

    Raises:
        ``error(message, dotted_key)`` naming the key, what it must be and what it is.
    """
    for key, default in defaults.items():
        dotted = f"{_prefix}{key}"
        if key in skip and not _prefix or dotted in UNCHECKED or key not in config:
            continue
        value = config[key]
        if isinstance(default, Mapping):
            if not isinstance(value, Mapping):
                raise error(f"{dotted}: expected a mapping of {', '.join(default)}, got {_describe(value)}", dotted)
            check_types(value, default, error=error, _prefix=f"{dotted}.")
            continue
        if dotted == "optim.betas":
            value = _check_one(dotted, value, (list,), False, error)
            if len(value) != 2:
                raise error(f"{dotted}: expected two numbers, got {_describe(value)}", dotted)
            config[key] = [_check_one(f"{dotted}[{i}]", v, (float,), False, error) for i, v in enumerate(value)]
            continue
        kind = NULLABLE.get(dotted) or (type(default) if default is not None else None)
        if kind is None or kind not in _NAMES:
            continue
        config[key] = _check_one(dotted, value, (kind,), dotted in NULLABLE or default is None, error)


_PRIMITIVE = {"int": int, "float": float, "bool": bool, "str": str}


def _annotation_kinds(param: inspect.Parameter) -> tuple[tuple[type, ...], bool] | None:
    """``(types, None allowed)`` from a parameter's annotation or default; None when not primitive."""
    ann = param.annotation
    if isinstance(ann, type) and ann in _PRIMITIVE.values():
        return (ann,), param.default is None
    if isinstance(ann, str) and ann:
        text = ann.replace(" ", "")
        optional = False
        m = re.fullmatch(r"(?:typing\.)?Optional\[(.+)\]", text)
        if m:
            text, optional = m.group(1), True
        parts = [p for p in text.split("|")]
        if "None" in parts:
            parts.remove("None")
            optional = True
        if parts and all(p in _PRIMITIVE for p in parts):
            kinds = tuple(_PRIMITIVE[p] for p in parts)
            if int in kinds and float in kinds:
                kinds = tuple(k for k in kinds if k is not float) + (float,)
            return kinds, optional or param.default is None
        return None
    default = param.default
    if type(default) in _PRIMITIVE.values():
        return (type(default),), False
    return None


def _check_prior(spec: Any, error: Callable) -> None:
    from e3relax.registry import PRIORS, RegistryError

    if spec is None:
        return
    name = spec.get("name") if isinstance(spec, dict) else spec
    try:
        PRIORS.get(name)
    except RegistryError as exc:
        raise error(f"model.prior: {exc}", "model.prior") from exc


def check_spec_types(section: str, spec: dict[str, Any], error: Callable = ValueError) -> None:
    """Check the keyword arguments of a ``model`` or ``loss`` spec against its class's constructor.

    Unknown classes are left to the registry (which names them); unannotated or non-primitive
    parameters are not checked. Values are normalised in place.
    """
    from e3relax.registry import LOSSES, MODELS, RegistryError

    registry = {"model": MODELS, "loss": LOSSES}[section]
    try:
        cls = registry.get(spec["name"])
    except RegistryError as exc:
        raise error(f"{section}.name: {exc}", f"{section}.name") from exc
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value in spec.items():
        if key == "name":
            continue
        if section == "model" and key == "prior":  # any model takes a composition prior (PRIORS)
            _check_prior(value, error)
            continue
        dotted = f"{section}.{key}"
        param = params.get(key)
        if param is None:
            if takes_any:
                continue
            known = ", ".join(k for k, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
            raise error(f"{dotted}: '{spec['name']}' has no option '{key}'; its options: {known}", dotted)
        kinds = _annotation_kinds(param)
        if kinds is not None:
            spec[key] = _check_one(dotted, value, kinds[0], kinds[1], error)
