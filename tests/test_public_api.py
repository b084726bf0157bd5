"""The public surface is a contract: the exported names, and what `import errtrace` loads."""

from __future__ import annotations

import subprocess
import sys

import errtrace

EXPORTED = [
    "AppError", "BusinessError", "Classification", "CodeDefinitionError", "CodeRegistry",
    "Config", "ConfigError", "ContextFilter", "ErrorCode", "ErrorContext", "ErrorEvent",
    "Level", "SystemFailure", "TransientError", "__version__", "classify", "current",
    "grpc_aio_client_interceptors", "grpc_aio_server_interceptors",
    "grpc_client_interceptors", "grpc_server_interceptors", "instrument", "load_rules", "on_alert",
    "on_error", "outgoing_headers", "policy", "register_exception", "registry", "report",
    "set_fallback", "stats", "testing",
]


def test_all_is_sorted_and_locked() -> None:
    assert errtrace.__all__ == sorted(errtrace.__all__)
    assert errtrace.__all__ == EXPORTED


def test_every_exported_name_resolves_and_is_documented() -> None:
    for name in errtrace.__all__:
        value = getattr(errtrace, name)
        if name != "__version__":
            assert getattr(value, "__doc__", None), f"{name} has no docstring"


def test_import_loads_no_framework_grpc_protobuf_or_classifier() -> None:
    code = (
        "import sys, errtrace\n"
        "heavy = ('starlette', 'fastapi', 'flask', 'werkzeug', 'grpc', 'google.protobuf',"
        " 'httpx', 'yaml', 'openai', 'anthropic', 'opentelemetry', 'errtrace.core.rewrite')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_core_imports_only_the_standard_library() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import errtrace.core.codes, errtrace.core.propagation, errtrace.core.runtime\n"
        "import errtrace.core.encoding, errtrace.core.rewrite, errtrace.core.stringmap\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "stdlib = set(sys.stdlib_module_names)\n"
        "print(' '.join(sorted(m for m in new if m not in stdlib and m != 'errtrace')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_missing_grpc_extra_names_the_install_command() -> None:
    code = (
        "import sys\n"
        "sys.modules['grpc'] = None\n"
        "import errtrace\n"
        "try:\n"
        "    errtrace.grpc_server_interceptors()\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 'pip install "errtrace[grpc]"' in out.stdout
