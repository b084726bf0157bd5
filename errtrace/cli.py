"""The ``errtrace`` command.

::

    errtrace codes [--json] [--file CODES_YAML] [--level N]
    errtrace rules check [--codes CODES_YAML ...] FILE
    errtrace classify [--json] [--status N] [--provider P] [--codes CODES_YAML ...]
                      [--rules FILE] [TEXT]

Each subcommand is one ``_cmd_*`` function registered in :func:`build_parser`.
``--codes`` loads a codes file (as ``errtrace.registry.load_yaml`` does in a service)
before the rules, so that rules may name the codes it defines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from errtrace.core.codes import CodeRegistry

Command = Callable[[argparse.Namespace, TextIO, TextIO], int]


def _registry(files: Sequence[str] | None, err: TextIO) -> CodeRegistry | None:
    """The built-in codes plus those of ``files``, in order; None (reported) if one is bad."""
    from errtrace.core.codes import BUILTIN_CODES, CodeRegistry

    registry = CodeRegistry(list(BUILTIN_CODES))
    for path in files or ():
        try:
            registry.load_yaml(path)
        except ValueError as exc:  # CodeDefinitionError, ConfigFileError
            print(f"error: {exc}", file=err)
            return None
    return registry


def _rule_file_error(exc: Exception, args: argparse.Namespace, err: TextIO) -> int:
    print(f"error: {exc}", file=err)
    if not args.codes and "is not a registered error code" in str(exc):
        print("hint: load the codes file that defines it with --codes CODES_YAML", file=err)
    return 1


def _cmd_rules_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from errtrace.core.rewrite import RuleFileError, RuleSet

    codes = _registry(args.codes, err)
    if codes is None:
        return 1
    try:
        count = RuleSet(builtins=False, codes=codes).load(args.file, watch=False)
    except RuleFileError as exc:
        return _rule_file_error(exc, args, err)
    print(f"ok: {count} rule{'s' if count != 1 else ''}", file=out)
    return 0


def _cmd_codes(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    registry = _registry([args.file] if args.file else None, err)
    if registry is None:
        return 1
    codes = [c for c in registry if args.level is None or int(c.level) == args.level]
    for code in codes:
        if args.json:
            print(json.dumps({
                "id": code.id, "level": int(code.level), "http_status": code.http_status,
                "grpc_status": code.grpc_status, "retryable": code.retryable,
                "kind": code.kind, "fallback": code.fallback, "hint": code.hint,
            }), file=out)
        else:
            http = code.http_status or "-"
            retry = "retry" if code.retryable else ""
            print(
                f"{code.id:<32} {int(code.level)} {http!s:>3} {code.grpc_status or '-':<19} "
                f"{retry:<5} {code.hint}",
                file=out,
            )
    return 0


def _format_human(result: object) -> str:
    from errtrace.core.rewrite import Classification

    assert isinstance(result, Classification)
    lines = [
        f"code:       {result.code}",
        f"confidence: {result.confidence:.2f}",
        f"rule:       {result.rule}",
        f"provider:   {result.provider or '-'}",
        f"hint:       {result.hint}",
    ]
    if result.details:
        lines.append(
            "details:    " + json.dumps(result.details, sort_keys=True, ensure_ascii=False)
        )
    return "\n".join(lines)


def _cmd_classify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from errtrace.core.rewrite import RuleFileError, RuleSet

    codes = _registry(args.codes, err)
    if codes is None:
        return 1
    ruleset = RuleSet(codes=codes)
    if args.rules:
        try:
            ruleset.load(args.rules, watch=False)
        except RuleFileError as exc:
            return _rule_file_error(exc, args, err)
    messages: Sequence[str]
    if args.text is not None:
        messages = [args.text]
    else:
        messages = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    for index, message in enumerate(messages):
        result = ruleset.classify(message, status=args.status, provider=args.provider)
        if args.json:
            payload = result.as_dict()
            del payload["text"]  # the caller has the text; keep lines short
            print(json.dumps(payload, sort_keys=True, ensure_ascii=False), file=out)
        else:
            if index:
                print(file=out)
            print(_format_human(result), file=out)
    return 0


def _codes_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--codes",
        action="append",
        metavar="CODES_YAML",
        help="load this codes file first, so rules may use its codes (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``errtrace`` command."""
    parser = argparse.ArgumentParser(
        prog="errtrace",
        description="errtrace: error codes and LLM error classification.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    codes = commands.add_parser("codes", help="list the error codes (built-in and a YAML file)")
    codes.add_argument("--json", action="store_true", help="one JSON object per line")
    codes.add_argument("--file", metavar="CODES_YAML", help="also load (and check) this file")
    codes.add_argument("--level", type=int, choices=range(7), metavar="N", help="only level N")
    codes.set_defaults(handler=_cmd_codes)

    rules = commands.add_parser("rules", help="work with classifier rule files")
    rules_commands = rules.add_subparsers(dest="rules_command", metavar="SUBCOMMAND")
    check = rules_commands.add_parser("check", help="validate a YAML rule file")
    check.add_argument("file", metavar="FILE")
    _codes_option(check)
    check.set_defaults(handler=_cmd_rules_check)

    classify = commands.add_parser(
        "classify",
        help="classify LLM error text (TEXT, or one message per stdin line)",
    )
    classify.add_argument("text", nargs="?", metavar="TEXT")
    classify.add_argument("--json", action="store_true", help="one JSON object per line")
    classify.add_argument("--status", type=int, metavar="N", help="HTTP status of the response")
    classify.add_argument("--provider", metavar="P", help="provider, e.g. openai, anthropic")
    classify.add_argument("--rules", metavar="FILE", help="also apply this YAML rule file")
    _codes_option(classify)
    classify.set_defaults(handler=_cmd_classify)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``errtrace`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Command | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args, sys.stdout, sys.stderr)
    except BrokenPipeError:
        # The reader went away (``errtrace codes | head``): stop quietly, and keep the
        # interpreter from complaining when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
