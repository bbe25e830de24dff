"""Declarations: :class:`~fastapi_bus.EventRouter` and the :class:`~fastapi_bus.EventRoute` of
each handler. Declaring checks everything it can (names, parameters, types) and fails with a
message naming the handler; nothing runs until a bus is built from the routers."""
