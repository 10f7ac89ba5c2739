"""Method registry: names -> AttributionMethod classes, each with its display title and aliases."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence

from rlviz.methods.base import AttributionMethod

_REGISTRY: dict[str, type[AttributionMethod]] = {}
# Other names people use for a method (DESIGN.md's example says "saliency"), filled by register.
_ALIASES: dict[str, str] = {}


def register(
    name: str, title: str | None = None, aliases: Sequence[str] = ()
) -> Callable[[type[AttributionMethod]], type[AttributionMethod]]:
    """Class decorator: make ``cls`` available as ``get_method(name)`` (and by its ``aliases``).

    ``title`` is what panels and plots print (default: ``name``); it is set on the class as
    ``cls.title`` and read back with :func:`method_title`.
    """

    def decorate(cls: type[AttributionMethod]) -> type[AttributionMethod]:
        if not (isinstance(cls, type) and issubclass(cls, AttributionMethod)):
            raise TypeError(f"@register({name!r}) needs an AttributionMethod subclass, got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"an attribution method called {name!r} is already registered")
        taken = [a for a in aliases if a in _REGISTRY or _ALIASES.get(a, name) != name]
        if taken:
            raise ValueError(f"alias(es) {taken} of {name!r} already name another method")
        cls.name = name
        cls.title = title or name  # set on every class: a subclass must not inherit the title
        _REGISTRY[name] = cls
        _ALIASES.update(dict.fromkeys(aliases, name))
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
        raise TypeError(
            f"method {key!r} got options {sorted(options)}; it accepts: "
            f"{', '.join(method_options(key)) or '(no options)'}"
        ) from None
    return cls(**options)


def _lookup(name: str) -> type[AttributionMethod]:
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise ValueError(f"unknown attribution method {name!r}; available: {', '.join(_REGISTRY)}")
    return _REGISTRY[key]


def check_methods(
    names: Iterable[str | AttributionMethod], flag: str | None = None
) -> list[str | AttributionMethod]:
    """``names`` as a list once each is a registered method, alias or built method: the one check
    of method names for the API, the wrappers and the CLI.

    Raises ``ValueError`` at the first unknown name, listing the valid ones; ``flag`` is the CLI
    flag the names came from (``"--methods"``), said in the message.
    """
    names = list(names)
    for name in names:
        if isinstance(name, AttributionMethod) or _ALIASES.get(name, name) in _REGISTRY:
            continue
        what = f"method {name!r} in {flag}" if flag else f"attribution method {name!r}"
        raise ValueError(f"unknown {what}; valid: {', '.join(_REGISTRY)}")
    return names


def method_options(name: str) -> list[str]:
    """Keyword options a registered method's constructor accepts."""
    cls = _lookup(name)
    return [p for p in inspect.signature(cls).parameters if p != "self"]


def method_title(name: str) -> str:
    """Display title of a method name or alias (``"gradcam"`` -> ``"Grad-CAM"``); unknown names
    pass through unchanged, so panels can label any string."""
    cls = _REGISTRY.get(_ALIASES.get(name, name))
    return cls.title if cls is not None else name


def is_signed(method: str) -> bool:
    """Whether ``method``'s maps are signed (diverging colours, [-1, 1])."""
    return bool(getattr(get_method(method), "signed", False))
