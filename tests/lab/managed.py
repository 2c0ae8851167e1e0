"""A base for lab helpers that are started, then always stopped: `with Helper() as h:`."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Managed:
    """Context-manager plumbing: `__enter__` calls start(), `__exit__` always calls stop()."""

    def start(self) -> Self:
        """Start the helper; subclasses return self."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the helper and remove what it created, also after a failed start."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
