"""Base class of registered importers (filled in by the datasets work)."""
from __future__ import annotations


class Importer:
    """Reads one source layout and yields validated (unrelaxed, relaxed, id) items."""
