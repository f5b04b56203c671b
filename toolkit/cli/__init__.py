"""The Typer face: parse, call one toolkit.api function, render with rich."""
from toolkit.cli.app import app

__all__ = ["app"]
