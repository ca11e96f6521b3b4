"""`flash run`: the local dev server (FastAPI). Only the CLI imports it."""
