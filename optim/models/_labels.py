"""Class labels shipped with the package, read from ``optim/models/data`` on first use.

``INCEPTION5H_CLASSES`` has one label per output of inception5h's 1008-way classifier: indices 0-1000 are
Lucid's ``imagenet_comp_graph_label_strings.txt`` (``"dummy"`` then the 1000 ImageNet classes in that
graph's own order), and indices 1001-1007, outputs the graph pads its classifier with and never trained on
a class, are labelled ``"unused 1001"`` ... ``"unused 1007"`` so that ``INCEPTION5H_CLASSES[logits.argmax()]``
always names the output.
``IMAGENET_CLASSES`` is the standard ImageNet-1k order (index 285 "Egyptian cat", 967 "espresso").
``INCEPTIONV1_PLACES365_CLASSES`` names the 365 outputs of ``googlenet_places365``: the Places365 scene
categories in the dataset's own order and spelling (``categories_places365.txt``: index 0 ``"/a/airfield"``,
319 ``"/s/street"``).
"""
from __future__ import annotations

import os
from typing import Iterator, List, Optional, Sequence, Union, overload

__all__ = ["INCEPTION5H_CLASSES", "IMAGENET_CLASSES", "INCEPTIONV1_PLACES365_CLASSES", "LabelList"]

_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


class LabelList(Sequence[str]):
    """A read-only list of class names loaded from a text file (one name a line) on first access.

    Args:
        filename: file name inside ``optim/models/data``.

    Example::

        >>> IMAGENET_CLASSES[285]
        'Egyptian cat'
        >>> IMAGENET_CLASSES.index("espresso")
        967
        >>> len(IMAGENET_CLASSES), len(INCEPTION5H_CLASSES)
        (1000, 1008)
        >>> INCEPTION5H_CLASSES[1007]
        'unused 1007'
    """

    def __init__(self, filename: str) -> None:
        self._path = os.path.join(_DATA_DIR, filename)
        self._labels: Optional[List[str]] = None

    def _load(self) -> List[str]:
        if self._labels is None:
            with open(self._path, encoding="utf-8") as f:
                self._labels = [line.rstrip("\n") for line in f if line.strip()]
        return self._labels

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> List[str]: ...

    def __getitem__(self, index: Union[int, slice]) -> Union[str, List[str]]:
        return self._load()[index]

    def __len__(self) -> int:
        return len(self._load())

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LabelList):
            return self._load() == other._load()
        if isinstance(other, (list, tuple)):
            return self._load() == list(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._path)

    def __repr__(self) -> str:
        return f"LabelList({os.path.basename(self._path)!r}, {len(self)} labels)"


INCEPTION5H_CLASSES = LabelList("inception5h_labels.txt")
IMAGENET_CLASSES = LabelList("imagenet_classes.txt")
INCEPTIONV1_PLACES365_CLASSES = LabelList("places365_labels.txt")
