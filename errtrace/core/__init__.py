"""The framework-free context core of errtrace.

Everything in this package imports only the standard library (and PyYAML, lazily,
for rule and code files). Framework adapters live in ``errtrace.middleware``,
``errtrace.grpc_interceptors`` and ``errtrace.adapters`` and call into this core.
"""
