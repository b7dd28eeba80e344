"""The bundled default models and the deterministic data generator they were trained on."""
