"""One registry type for every named table of the project: presets, protocols, engine configs, modes.

A :class:`Registry` is a mapping from a name to an entry, with a kind (``"detection
protocol"``) used in its one error text. :meth:`Registry.lookup` is the one lookup: an unknown name is
an :class:`UnknownName` (a ``ValueError``, so a command line answers it as a usage error, exit 2)
that names the kind, the name and every known name. A two-level table (segmentation: protocol, then
dataset) is a registry of registries, and the inner error names the outer entry in its kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownName(ValueError):
    """A name no registry entry has; the message names the kind and the known names."""


class Registry(MutableMapping[str, T], Generic[T]):
    """Entries can be added (a plugin's protocol, a test's toy task) and replaced."""

    def __init__(self, kind: str, entries: Mapping[str, T] | Iterable[tuple[str, T]], *,
                 also: Iterable[str] = ()):
        """``also``: names a lookup function accepts besides the entries (aliases it resolves
        first), listed in the error text with the rest."""
        self.kind = kind
        self._entries = dict(entries)
        self._also = tuple(also)

    def lookup(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownName(f"unknown {self.kind} {name!r} (known: {', '.join([*self._also, *self._entries])})") \
                from None

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __setitem__(self, name: str, entry: T) -> None:
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
