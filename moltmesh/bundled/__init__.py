"""The bundled default models and the deterministic data generator they were trained on."""

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / "models"
"""The bundled model repository (part of the installed package: read, never written to)."""
