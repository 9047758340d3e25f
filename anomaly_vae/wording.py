"""Words for counts in messages and progress lines, shared by the command line and the
library (no heavy imports: the command line loads it for ``--help``)."""

from __future__ import annotations


def counted(count: int, noun: str) -> str:
    """``count`` and ``noun`` (a plural), singular for 1.

    >>> counted(1, "images"), counted(2, "rows"), counted(1000, "images"), counted(0, "rows")
    ('1 image', '2 rows', '1,000 images', '0 rows')
    """
    return f"{count:,} {noun if count != 1 else noun.removesuffix('s')}"
