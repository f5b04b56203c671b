"""Where the project's data folders live (recipes/, devices/, reports/), named once."""
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RECIPES_DIR = PROJECT_ROOT / "recipes"
DEVICES_DIR = PROJECT_ROOT / "devices"
TEMPLATES_DIR = PROJECT_ROOT / "reports"
