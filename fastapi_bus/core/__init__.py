"""The vocabulary every layer shares: messages, names, headers, exceptions, metrics hooks and
the ``Fault`` event. It imports nothing else of fastapi-bus."""
