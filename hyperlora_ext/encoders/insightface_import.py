"""insightface's model zoo, imported without the rest of the package.

``import insightface`` runs the package's ``__init__``, which imports every app, among them the
mask renderer and through it albumentations: most of insightface's import time (seconds), for
code HyperLoRA never calls. So, unless insightface is imported already, the package is registered
without running its ``__init__`` and only ``insightface.model_zoo`` is imported. The first access
to any other name of the package (``insightface.__version__``, ``insightface.app`` from another
extension) runs the ``__init__`` then, so to everyone else the package behaves as if imported
normally. Should the partial import fail (another insightface layout), the normal import is used.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import types
from typing import Any

PACKAGE = "insightface"
_lock = threading.RLock()


class _DeferredPackage(types.ModuleType):
    """A package whose ``__init__`` runs at the first access to a name it has not set yet."""

    def __getattr__(self, name: str) -> Any:
        with _lock:
            if not self.__dict__.get("_hyperlora_initialised"):
                self.__dict__["_hyperlora_initialised"] = True
                spec = self.__spec__
                assert spec is not None and spec.loader is not None  # set by _import_without_init
                spec.loader.exec_module(self)
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}") from None


def model_zoo() -> Any:
    """``insightface.model_zoo.model_zoo`` (``get_model``), importing as little as possible."""
    # insightface 0.7.3's full import loads albumentations, whose import checks PyPI for a newer
    # version (a network call at every start): switched off unless the user decided otherwise.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    with _lock:
        if PACKAGE not in sys.modules:
            try:
                return _import_without_init()
            except Exception:  # an insightface whose model zoo needs its __init__: import it all
                for name in [n for n in sys.modules if n.split(".")[0] == PACKAGE]:
                    del sys.modules[name]
    return importlib.import_module(f"{PACKAGE}.model_zoo.model_zoo")


def _import_without_init() -> Any:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"No module named {PACKAGE!r}")
    package = importlib.util.module_from_spec(spec)
    package.__class__ = _DeferredPackage
    sys.modules[PACKAGE] = package
    return importlib.import_module(f"{PACKAGE}.model_zoo.model_zoo")
