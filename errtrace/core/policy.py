"""Level policy: which actions run for an error, and the user hooks behind them.

Actions per level default to the table of the design (``LEVEL_INFO``); a code may have
its own. The actions are:

``log``       log the error at its level's logging level (stack only for unhandled ones)
``metric``    count it (``errtrace.stats()``, ``errors.<CODE>``)
``alert``     call every ``on_alert`` callback
``event``     record an :class:`~errtrace.core.events.ErrorEvent` (always done)
``fallback``  call the fallback registered for the code; its result becomes the response
``retry``     advisory: the code is retryable; clients get Retry-After / RetryInfo
``exit``      level 0 only and only with ``exit_on_fatal``: stop the process after responding

User callables run inside :func:`failsafe`: a bug in a hook is logged and counted and
never changes the response. An ``on_error``/``on_alert`` hook defined with ``async def``
runs as a task of the event loop running where the error is recorded (ASGI apps, async
grpc.aio handlers): it does not delay the answer. Where no loop runs (WSGI, sync gRPC),
it cannot run: its coroutine is closed, and that is logged and counted as a hook failure.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from errtrace.core.codes import ErrorCode, registry
from errtrace.core.levels import LEVEL_INFO, Level
from errtrace.core.stats import stats

log = logging.getLogger("errtrace")

ACTIONS = frozenset({"log", "metric", "alert", "event", "fallback", "retry", "exit"})
T = TypeVar("T")

NO_RESULT: Any = object()
"""Returned by :func:`failsafe` when the callable raised."""


def failsafe(fn: Callable[..., T], *args: Any, what: str = "hook") -> T:
    """Call ``fn``; on an exception log it, count ``hook_failures`` and return NO_RESULT."""
    try:
        return fn(*args)
    except Exception:
        stats.incr("hook_failures")
        log.exception("errtrace: %s %r raised; ignored", what, fn)
        return NO_RESULT  # type: ignore[no-any-return]


def run_hooks(hooks: Iterable[Callable[..., Any]], *args: Any, what: str) -> None:
    """Call each hook inside :func:`failsafe`; the awaitable of an ``async def`` hook is
    scheduled on the running event loop (see the module docstring)."""
    for hook in hooks:
        result = failsafe(hook, *args, what=what)
        if result is not None and inspect.isawaitable(result):
            _schedule(result, hook, what)


_tasks: set[Any] = set()  # the running hook tasks, kept from the garbage collector


def _schedule(awaitable: Any, hook: Callable[..., Any], what: str) -> None:
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        if inspect.iscoroutine(awaitable):
            awaitable.close()
        stats.incr("hook_failures")
        log.error(
            "errtrace: %s %r is async and no event loop runs here (a WSGI app, a sync gRPC "
            "handler): it did not run; define it with def to run it here", what, hook,
        )
        return
    task = loop.create_task(_await_hook(awaitable, hook, what))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _await_hook(awaitable: Any, hook: Callable[..., Any], what: str) -> None:
    try:
        await awaitable
    except Exception:
        stats.incr("hook_failures")
        log.exception("errtrace: %s %r raised; ignored", what, hook)


Hook = Callable[..., Any]


class Policy:
    """Actions per level and per code, plus ``on_error``/``on_alert`` hooks and fallbacks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._level_actions: dict[Level, frozenset[str]] = {
            level: frozenset(info.actions) for level, info in LEVEL_INFO.items()
        }
        self._code_actions: dict[str, frozenset[str]] = {}
        self._fallbacks: dict[str, Hook] = {}
        self.error_hooks: list[Hook] = []
        self.alert_hooks: list[Hook] = []

    @staticmethod
    def _check(actions: Iterable[str]) -> frozenset[str]:
        chosen = frozenset(actions)
        unknown = chosen - ACTIONS
        if unknown:
            raise ValueError(
                f"unknown action(s) {sorted(unknown)}; choose from {sorted(ACTIONS)}"
            )
        return chosen | {"event"}

    def set_level_actions(self, level: Level | int | str, actions: Iterable[str]) -> None:
        """Replace the actions of every code of ``level`` without its own actions."""
        lvl = Level.parse(level)
        chosen = self._check(actions)
        if "exit" in chosen and lvl is not Level.FATAL:
            raise ValueError("the 'exit' action is allowed for level 0 (FATAL) only")
        with self._lock:
            self._level_actions[lvl] = chosen

    def set_code_actions(self, code: str, actions: Iterable[str]) -> None:
        """Give one code its own actions."""
        found = registry.get(code)
        chosen = self._check(actions)
        if "exit" in chosen and found.level is not Level.FATAL:
            raise ValueError("the 'exit' action is allowed for level 0 (FATAL) codes only")
        with self._lock:
            self._code_actions[code] = chosen

    def actions_for(self, code: ErrorCode) -> frozenset[str]:
        """The actions that run for ``code``."""
        own = self._code_actions.get(code.id)
        return own if own is not None else self._level_actions[code.level]

    def set_fallback(self, code: str, fn: Hook) -> None:
        """Register ``fn(error, context)`` whose result answers requests failing with ``code``.

        Over HTTP the result may be a dict/list (sent as JSON 200), a str or bytes, or a
        framework response object; over gRPC it must be the response message.
        """
        found = registry.get(code)
        if not self.runs_fallback(found):
            log.warning(
                "errtrace: the fallback for %s will not run: neither its level's nor its "
                "own actions include 'fallback' (policy.set_code_actions)", code,
            )
        with self._lock:
            self._fallbacks[code] = fn

    def runs_fallback(self, code: ErrorCode) -> bool:
        """Whether a fallback registered for ``code`` answers its failures: when its
        actions include ``fallback``, or the catalog names a fallback action for it
        (``AI_EMBEDDING_FAILED``: keyword search) and its actions were not set by code."""
        if "fallback" in self.actions_for(code):
            return True
        return code.fallback is not None and code.id not in self._code_actions

    def fallback_for(self, code: str) -> Hook | None:
        """The fallback registered for ``code``, if any."""
        return self._fallbacks.get(code)

    def on_error(self, fn: Hook) -> Hook:
        """Register ``fn(event, context)`` for every recorded error (usable as a decorator)."""
        with self._lock:
            self.error_hooks.append(fn)
        return fn

    def on_alert(self, fn: Hook) -> Hook:
        """Register ``fn(event, context)`` for errors whose actions include ``alert``."""
        with self._lock:
            self.alert_hooks.append(fn)
        return fn

    def clear_hooks(self) -> None:
        """Remove hooks and fallbacks (tests)."""
        with self._lock:
            self.error_hooks.clear()
            self.alert_hooks.clear()
            self._fallbacks.clear()
            self._code_actions.clear()
            self._level_actions = {
                level: frozenset(info.actions) for level, info in LEVEL_INFO.items()
            }


policy = Policy()
"""The process-wide policy."""
