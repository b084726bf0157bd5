"""``errtrace.instrument``: one line for FastAPI, Starlette, Flask or any ASGI/WSGI app."""

from __future__ import annotations

import inspect
from typing import Any, TypeVar, cast

from errtrace.core.config import Config
from errtrace.core.runtime import (
    Runtime,
    default_runtime,
    resolve_runtime,
    set_default_runtime,
)

A = TypeVar("A")


def _is_instance_of(app: object, module: str, name: str) -> bool:
    return any(
        klass.__name__ == name and klass.__module__.split(".")[0] == module
        for klass in type(app).__mro__
    )


def _runtime(config: Config | None, options: dict[str, Any]) -> Runtime:
    if config is None and not options:
        return default_runtime()
    runtime = resolve_runtime(None, config, options)
    # The first configured app also configures errtrace.report()/outgoing_headers()
    # outside its requests, unless something configured them already.
    from errtrace.core import runtime as runtime_module

    if runtime_module._default is None:
        set_default_runtime(runtime)
    return runtime


def _installed_runtime(app: object) -> Runtime | None:
    """The runtime a previous ``instrument()`` call installed on ``app``, if any."""
    found = getattr(getattr(app, "state", None), "errtrace_runtime", None)
    if found is None:
        extensions = getattr(app, "extensions", None)
        found = extensions.get("errtrace") if isinstance(extensions, dict) else None
    return found if isinstance(found, Runtime) else None


def _check_settings(app: object, config: Config | None, options: dict[str, Any]) -> None:
    """A second ``instrument()`` on the same app is a no-op; settings that differ from
    the first call's would be silently lost, so they are an error instead."""
    installed = _installed_runtime(app)
    if installed is None:
        return
    wanted = config if config is not None else Config.load(**options)
    if wanted != installed.config:
        raise RuntimeError(
            "this app is instrumented already, with other settings; "
            "pass them to the first errtrace.instrument() call"
        )


def instrument(app: A, *, config: Config | None = None, **options: Any) -> A:
    """Give ``app`` the errtrace context and structured errors; returns ``app`` itself.

    FastAPI, Starlette and Flask apps are instrumented in place (middleware plus the
    framework's own error handlers), so ``app = errtrace.instrument(FastAPI())`` keeps
    working with ``@app.get``. Any other ASGI or WSGI callable is wrapped and the
    wrapper returned. Options are those of :class:`errtrace.Config`.
    """
    if config is not None or options:
        _check_settings(app, config, options)
    runtime = _runtime(config, options)
    # The app's type is only known by inspection here; each branch checks it first.
    target: Any = app
    if _is_instance_of(target, "starlette", "Starlette"):
        from errtrace.middleware.starlette import instrument_starlette

        return cast(A, instrument_starlette(target, runtime))
    if _is_instance_of(target, "flask", "Flask"):
        from errtrace.middleware.flask import instrument_flask

        return cast(A, instrument_flask(target, runtime))
    if not callable(target):
        raise TypeError(f"cannot instrument {type(app).__name__}: not an ASGI or WSGI app")
    call = target if inspect.isfunction(target) or inspect.ismethod(target) else target.__call__
    if inspect.iscoroutinefunction(call):
        from errtrace.middleware.asgi import ErrtraceMiddleware

        return cast(A, ErrtraceMiddleware(target, runtime))
    from errtrace.middleware.wsgi import ErrtraceWSGIMiddleware

    return cast(A, ErrtraceWSGIMiddleware(target, runtime))
