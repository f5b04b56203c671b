"""Report sections beyond the core tables. Importing the package registers every section module."""
from toolkit.output.sections import quantization, training  # noqa: F401  (registration)
from toolkit.output.sections.registry import SECTIONS, register_section

__all__ = ["SECTIONS", "register_section"]
