"""Base class and item types of registered importers.

An importer reads one published source layout and yields, per structure pair, either a
:class:`RawPair` (ASE ``Atoms`` for both sides, validated later by the converter) or a
:class:`Skipped` item naming the id and the reason (unreadable file, missing partner...).
Nothing valid is lost because something else was bad: one bad file yields one ``Skipped``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator, Union


@dataclass
class RawPair:
    """One (unrelaxed, relaxed) pair as read from the source.

    Attributes:
        id: structure identifier, unique within the source.
        unrelaxed: ``ase.Atoms`` of the input structure.
        relaxed: ``ase.Atoms`` of the relaxed structure, or None for prediction-only items.
        energy: relaxed energy per atom (eV/atom) when the source gives it.
        trajectory: optional list of ``ase.Atoms`` frames of the relaxation (same atom order).
        frames: optional list of ``ase.Atoms`` (same atom order) that each become an extra training
            pair ``(frame -> relaxed)`` tagged with this pair's id as parent (written to
            ``train_frames.lmdb`` when the parent lands in the training split; see the converter).
        warnings: non-fatal findings of the importer (kept in the conversion report).
        split: ``"train"``, ``"val"``, ``"test"`` when the source publishes a split, else None.
        source: file or folder the pair came from (for messages).
    """

    id: str
    unrelaxed: Any
    relaxed: Any | None
    energy: float | None = None
    trajectory: list | None = None
    frames: list | None = None
    warnings: list = field(default_factory=list)
    split: str | None = None
    source: str = ""


@dataclass
class Skipped:
    """An item the importer could not read: reported with its id and reason, never silently lost."""

    id: str
    reason: str
    code: str = "unreadable"
    source: str = ""


Item = Union[RawPair, Skipped]


class Importer:
    """Base class: ``Importer(src, **options)`` then iterate to get :data:`Item` objects.

    Class attributes:
        needs_pickle: True when reading requires unpickling (MPF pickles, legacy LMDBs); such an
            importer refuses unless constructed with ``trust_pickle=True`` and says why.
    """

    needs_pickle: ClassVar[bool] = False

    def __init__(self, src: str | Path, *, trust_pickle: bool = False) -> None:
        self.src = Path(src)
        if not self.src.exists():
            raise FileNotFoundError(f"{type(self).__name__}: source '{self.src}' does not exist")
        if self.needs_pickle and not trust_pickle:
            raise PermissionError(
                f"{type(self).__name__}: reading '{self.src}' means unpickling Python objects, which can run "
                "arbitrary code. Pass --trust-pickle (trust_pickle=True) only for files from a source you trust."
            )
        self.trust_pickle = trust_pickle

    def __iter__(self) -> Iterator[Item]:
        """Items in a deterministic order. Override this, or :meth:`tasks` and :meth:`load`."""
        if type(self).tasks is Importer.tasks:
            raise NotImplementedError(f"{type(self).__name__} must define __iter__ or tasks()/load()")
        return (self.load(task) for task in self.tasks())

    def tasks(self) -> Iterator[Any]:
        """Light, picklable descriptions of the items, in a deterministic order.

        The converter calls :meth:`load` on each task in worker processes, so parsing runs in
        parallel. The default yields the items themselves (all reading happens here, serially).
        """
        return iter(self)

    def load(self, task: Any) -> Item:
        """Turn one task from :meth:`tasks` into an :data:`Item` (default: the task is the item).

        Must not raise for bad input: return :class:`Skipped` naming the id and the reason.
        """
        return task

    def __len__(self) -> int:  # optional: number of items, for progress bars
        raise TypeError(f"{type(self).__name__} does not know its length in advance")
