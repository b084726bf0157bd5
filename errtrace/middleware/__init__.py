"""ASGI and WSGI adapters of the errtrace core."""
