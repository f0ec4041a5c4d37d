"""Segmentation models: the RGB student and the RGB-X teachers (each module registers itself)."""

from kdbench.registry import import_submodules

import_submodules(__name__)
