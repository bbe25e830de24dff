"""An orders service built with fastapi-bus: run it with ``uvicorn example_app.main:app``."""
