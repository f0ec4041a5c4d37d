"""Data sets (each module registers itself) and geometry helpers."""

from kdbench.registry import import_submodules

import_submodules(__name__)
