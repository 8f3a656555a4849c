"""Name → model factory registry: ``create_model("cnn_rnn", rnn="lstm")``.

Factories are model classes (or callables) taking keyword-only ``num_classes``, ``image_size``
and their own options. Unknown names and unknown options fail early with the known choices.
"""

from __future__ import annotations

import difflib
import inspect
import logging
from typing import Any, Callable, TypeVar

from torch import nn

from fer_models.common.labels import IMAGE_SIDE, NUM_CLASSES

logger = logging.getLogger(__name__)

_FactoryT = TypeVar("_FactoryT", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_COMMON = ("num_classes", "image_size")


class UnknownModelError(ValueError):
    """A model name that is not registered."""


class ModelOptionError(TypeError):
    """An option that the named model does not accept."""


def register_model(name: str) -> Callable[[_FactoryT], _FactoryT]:
    """Class/function decorator registering a model factory under ``name``."""
    if not isinstance(name, str) or not name.strip() or name != name.strip().lower():
        raise ValueError(f"model names are non-empty lower-case strings without spaces (got {name!r})")

    def decorator(factory: _FactoryT) -> _FactoryT:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"model {name!r} is already registered by {_REGISTRY[name]!r}; pick another name")
        params = factory_parameters(factory)
        missing = [p for p in _COMMON if p not in params]
        if missing:
            raise TypeError(f"model factory for {name!r} must accept keyword arguments {missing}")
        _REGISTRY[name] = factory
        return factory

    return decorator


def factory_parameters(factory: Callable[..., nn.Module]) -> dict[str, inspect.Parameter]:
    """The keyword parameters of a factory. A model class whose ``__init__`` passes ``**options`` on to
    its base (e.g. ``CNNRNN`` to ``EncoderModel``) also has the base's parameters, declared there once."""
    params = dict(inspect.signature(factory).parameters)
    passes_on = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for base in factory.__mro__[1:] if isinstance(factory, type) else ():
        if not passes_on:
            break
        init = base.__dict__.get("__init__")
        if init is None:
            continue
        own = inspect.signature(init).parameters
        for name, p in own.items():
            if name != "self" and p.kind is not p.VAR_KEYWORD:
                params.setdefault(name, p)
        passes_on = any(p.kind is p.VAR_KEYWORD for p in own.values())
    return {n: p for n, p in params.items() if p.kind is not p.VAR_KEYWORD}


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def _factory(name: str) -> Callable[..., nn.Module]:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}{hint}; known models: {', '.join(list_models()) or '(none registered)'}"
        ) from None


def model_options(name: str) -> dict[str, Any]:
    """The model-specific options of ``name`` and their defaults (``num_classes``/``image_size`` excluded)."""
    params = factory_parameters(_factory(name))
    return {
        p.name: p.default
        for p in params.values()
        if p.name not in _COMMON and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def create_model(name: str, *, num_classes: int = NUM_CLASSES, image_size: int = IMAGE_SIDE, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` (training mode); model options go in ``kwargs``.

    Raises :class:`UnknownModelError` for an unregistered name and :class:`ModelOptionError`
    for options the model does not accept.
    """
    factory = _factory(name)
    options = model_options(name)
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        accepted = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "(none)"
        raise ModelOptionError(
            f"model {name!r} does not accept option(s) {', '.join(unknown)}; accepted options: {accepted}"
        )
    model = factory(num_classes=num_classes, image_size=image_size, **kwargs)
    logger.debug("created model %s (%s) with %s", name, type(model).__name__, kwargs)
    return model


def param_count(model: nn.Module | str, **kwargs: Any) -> int:
    """Trainable parameters of a model instance, or of ``create_model(name, **kwargs)``."""
    if isinstance(model, str):
        model = create_model(model, **kwargs)
    elif kwargs:
        raise TypeError("options are only accepted together with a model name")
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
