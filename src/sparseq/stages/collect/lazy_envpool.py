"""`import envpool` without its Jumanji renderers.

envpool 1.2.5 imports every family when it is imported; its `envpool.jumanji` package
pulls in matplotlib.pyplot for Python-side rendering: 1.4 of the 2.0 s `import envpool`
costs here. sparseq runs no Jumanji task, so before envpool is first imported that
package is registered as a lazy module: its registration (task ids) still loads, and
the first attribute anyone reads from it (making a Jumanji env) imports the real one.
"""

import importlib
import importlib.util
import sys
import types

DEFERRED = "envpool.jumanji"


class _DeferredPackage(types.ModuleType):
    """A package whose own `__init__` runs on the first missing attribute read."""

    def __getattr__(self, name: str):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        return getattr(real, name)


def defer_envpool_renderers() -> None:
    """Registers the lazy `envpool.jumanji` unless envpool is imported already (then
    there is nothing left to save) or is not installed."""
    if "envpool" in sys.modules or DEFERRED in sys.modules:
        return
    spec = importlib.util.find_spec("envpool")
    if spec is None or not spec.submodule_search_locations:
        return
    location = [f"{path}/jumanji" for path in spec.submodule_search_locations]
    package = _DeferredPackage(DEFERRED)
    package.__path__ = location
    package.__package__ = DEFERRED
    package.__spec__ = importlib.util.spec_from_loader(DEFERRED, loader=None, is_package=True)
    package.__spec__.submodule_search_locations = location
    sys.modules[DEFERRED] = package
