"""Method registry: names -> AttributionMethod classes."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from rlviz.methods.base import AttributionMethod

_REGISTRY: dict[str, type[AttributionMethod]] = {}
# Other names people use for the same method (DESIGN.md's example says "saliency").
_ALIASES: dict[str, str] = {
    "saliency": "gradient",
    "vanilla_gradient": "gradient",
    "input_x_gradient": "grad_x_input",
    "ig": "integrated_gradients",
    "gradcam++": "gradcam_pp",
    "greydanus": "perturbation",
}


def register(name: str) -> Callable[[type[AttributionMethod]], type[AttributionMethod]]:
    """Class decorator: make ``cls`` available as ``get_method(name)``."""

    def decorate(cls: type[AttributionMethod]) -> type[AttributionMethod]:
        if not (isinstance(cls, type) and issubclass(cls, AttributionMethod)):
            raise TypeError(f"@register({name!r}) needs an AttributionMethod subclass, got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"an attribution method called {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def available_methods() -> list[str]:
    """Names of the registered methods, in registration order."""
    return list(_REGISTRY)


def get_method(name: str | AttributionMethod, **options: object) -> AttributionMethod:
    """A configured method by name (``options`` go to its constructor); instances pass through."""
    if isinstance(name, AttributionMethod):
        if options:
            raise TypeError(f"got options {sorted(options)} for an already built {name!r}")
        return name
    if not isinstance(name, str):
        raise TypeError(f"a method is named by a string, got {type(name).__name__}")
    cls = _lookup(name)
    key = cls.name
    try:
        inspect.signature(cls).bind(**options)
    except TypeError:
        accepted = [p for p in inspect.signature(cls).parameters if p != "self"]
        raise TypeError(
            f"method {key!r} got options {sorted(options)}; it accepts: "
            f"{', '.join(accepted) or '(no options)'}"
        ) from None
    return cls(**options)


def _lookup(name: str) -> type[AttributionMethod]:
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise ValueError(f"unknown attribution method {name!r}; available: {', '.join(_REGISTRY)}")
    return _REGISTRY[key]


def method_options(name: str) -> list[str]:
    """Keyword options a registered method's constructor accepts."""
    cls = _lookup(name)
    return [p for p in inspect.signature(cls).parameters if p != "self"]
