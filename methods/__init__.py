"""Built-in distillation methods, one file each; importing the package registers them all."""

from kdbench.registry import import_submodules

import_submodules(__name__)
