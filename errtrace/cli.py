"""The ``errtrace`` command.

::

    errtrace rules check FILE
    errtrace classify [--json] [--status N] [--provider P] [--rules FILE] [TEXT]

Each subcommand is one ``_cmd_*`` function registered in :func:`build_parser`, so a
new one (``errtrace codes``) is a parser entry plus a function.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

Command = Callable[[argparse.Namespace, TextIO, TextIO], int]


def _cmd_rules_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from errtrace.core.rewrite import RuleFileError, RuleSet

    try:
        count = RuleSet(builtins=False).load(args.file, watch=False)
    except RuleFileError as exc:
        print(f"error: {exc}", file=err)
        return 1
    print(f"ok: {count} rule{'s' if count != 1 else ''}", file=out)
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

    ruleset = RuleSet()
    if args.rules:
        try:
            ruleset.load(args.rules, watch=False)
        except RuleFileError as exc:
            print(f"error: {exc}", file=err)
            return 1
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``errtrace`` command."""
    parser = argparse.ArgumentParser(
        prog="errtrace",
        description="errtrace: error codes and LLM error classification.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    rules = commands.add_parser("rules", help="work with classifier rule files")
    rules_commands = rules.add_subparsers(dest="rules_command", metavar="SUBCOMMAND")
    check = rules_commands.add_parser("check", help="validate a YAML rule file")
    check.add_argument("file", metavar="FILE")
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
    return handler(args, sys.stdout, sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
