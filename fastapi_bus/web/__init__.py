"""The FastAPI glue: the ``Bus`` dependency and publisher middleware, and
:class:`~fastapi_bus.BusExtension`, which plugs a bus into an app's lifespan."""
