"""Finds node classes: every module under ``nodes.connectors`` and ``nodes.batches``, plus custom
modules a topology names by Python path (``imports: [mycompany.nodes]``).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterable
from types import ModuleType

from worker.node import Batch, Connector, Node
from worker.topics import KAFKA_TOPIC_NAME

BUILTIN_PACKAGES = ("nodes.connectors", "nodes.batches")


class NodeRegistry:
    def __init__(self) -> None:
        self._nodes: dict[str, type[Node]] = {}

    def register(self, cls: type[Node]) -> None:
        if not KAFKA_TOPIC_NAME.fullmatch(cls.name):
            # it names the node type's topic and consumer group: Kafka would refuse them at start
            raise ValueError(
                f"node name {cls.name!r} of {cls.__module__}.{cls.__qualname__} is not a Kafka topic name "
                "(letters, digits, '.', '_', '-')"
            )
        existing = self._nodes.get(cls.name)
        if existing is not None and existing is not cls:
            raise ValueError(f"node name {cls.name!r} is taken by {existing.__module__}.{existing.__qualname__}")
        self._nodes[cls.name] = cls

    def register_module(self, module: ModuleType) -> list[str]:
        found = []
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(obj, Connector | Batch)
                and not inspect.isabstract(obj)
                and obj.__module__ == module.__name__
                and isinstance(getattr(obj, "name", None), str)
            ):
                self.register(obj)
                found.append(obj.name)
        return found

    def import_path(self, path: str) -> list[str]:
        """Import a module (or every module of a package) and register the nodes it defines."""
        module = importlib.import_module(path)
        found = self.register_module(module)
        if hasattr(module, "__path__"):
            for info in pkgutil.walk_packages(module.__path__, prefix=f"{path}."):
                found += self.register_module(importlib.import_module(info.name))
        return found

    def load_builtin(self) -> None:
        for package in BUILTIN_PACKAGES:
            self.import_path(package)

    def get(self, name: str) -> type[Node] | None:
        return self._nodes.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def names(self) -> list[str]:
        return sorted(self._nodes)

    def items(self) -> Iterable[tuple[str, type[Node]]]:
        return sorted(self._nodes.items())


def default_registry(imports: Iterable[str] = ()) -> NodeRegistry:
    registry = NodeRegistry()
    registry.load_builtin()
    for path in imports:
        registry.import_path(path)
    return registry
