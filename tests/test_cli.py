"""The ``errtrace`` command: ``rules check`` and ``classify``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from errtrace.cli import main

GOOD = """
rules:
  - id: gateway-budget
    code: LLM_QUOTA_EXCEEDED
    patterns: ['team budget exhausted']
  - id: gateway-gpu
    code: LLM_OVERLOADED
    patterns: ['gpu pool drained']
"""


def test_rules_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD, encoding="utf-8")
    assert main(["rules", "check", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "ok: 2 rules"


def test_rules_check_reports_the_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD.replace("LLM_OVERLOADED", "NO_SUCH_CODE"), encoding="utf-8")
    assert main(["rules", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err
    assert "rules[1] (id 'gateway-gpu').code" in err


def test_rules_check_refuses_a_pattern_that_backtracks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        GOOD + "  - id: slow-budget\n    code: LLM_QUOTA_EXCEEDED\n"
        "    patterns: ['budget\\s*\\w+\\s*\\w+\\s*\\w+\\s*exhausted']\n",
        encoding="utf-8",
    )
    assert main(["rules", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: rules[2] (id 'slow-budget').patterns[0]: unsafe pattern" in err
    assert "budget\\\\s*\\\\w+" in err  # the pattern, as repr() shows it
    assert "two unbounded repetitions (\\w+ and \\w+)" in err


def test_classify_text_human_readable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", "--status", "429", "You exceeded your current quota"]) == 0
    out = capsys.readouterr().out
    assert "code:       LLM_QUOTA_EXCEEDED" in out
    assert "rule:       openai:insufficient-quota" in out
    assert "hint:" in out


def test_classify_json_from_stdin_one_object_per_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (
        "openai.APITimeoutError: Request timed out.\n\nprompt is too long: 9 tokens > 8 maximum\n"
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    assert main(["classify", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["code"] for row in rows] == ["LLM_TIMEOUT", "LLM_CONTEXT_LENGTH_EXCEEDED"]
    assert rows[1]["details"] == {"requested_tokens": 9, "limit_tokens": 8}
    assert set(rows[0]) == {"code", "confidence", "rule", "hint", "provider", "details"}


def test_classify_with_a_rule_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD, encoding="utf-8")
    assert main(["classify", "--json", "--rules", str(path), "GPU pool drained"]) == 0
    assert json.loads(capsys.readouterr().out)["rule"] == "gateway-gpu"
    path.write_text("rules: 3", encoding="utf-8")
    assert main(["classify", "--rules", str(path), "x"]) == 1


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "classify" in capsys.readouterr().err


def test_python_dash_m_errtrace() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "errtrace",
            "classify",
            "--json",
            "--provider",
            "anthropic",
            '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert (row["code"], row["provider"]) == ("LLM_OVERLOADED", "anthropic")


def test_codes_lists_the_catalog_and_a_users_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["codes", "--level", "0"]) == 0
    out = capsys.readouterr().out
    assert out.split()[0] == "AI_PROCESS_UNSAFE" and len(out.strip().splitlines()) == 1
    path = tmp_path / "codes.yaml"
    path.write_text("codes:\n  - id: PAYMENT_DECLINED\n    level: 3\n    http_status: 402\n")
    assert main(["codes", "--json", "--file", str(path)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 46
    assert rows[-1] == {
        "id": "PAYMENT_DECLINED", "level": 3, "http_status": 402,
        "grpc_status": "FAILED_PRECONDITION", "retryable": False, "kind": "business",
        "fallback": None, "hint": "",
    }
    path.write_text("codes:\n  - id: bad id\n    level: 3\n")
    assert main(["codes", "--file", str(path)]) == 1
    assert "codes[0].id" in capsys.readouterr().err


# ---------------------------------------------------------------- user-defined codes

ACME_CODES = """
codes:
  - id: ACME_BUDGET_EXHAUSTED
    level: 1
    http_status: 503
    hint: Ask the platform team to raise the team budget.
"""
ACME_RULES = """
rules:
  - id: acme-budget
    code: ACME_BUDGET_EXHAUSTED
    patterns: ["team budget exhausted"]
"""


def _acme_files(tmp_path: Path) -> tuple[Path, Path]:
    codes = tmp_path / "acme_codes.yaml"
    codes.write_text(ACME_CODES, encoding="utf-8")
    rules = tmp_path / "custom_code.yaml"
    rules.write_text(ACME_RULES, encoding="utf-8")
    return codes, rules


def test_rules_check_with_the_codes_file_that_defines_the_rules_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    codes, rules = _acme_files(tmp_path)
    assert main(["rules", "check", str(rules)]) == 1
    err = capsys.readouterr().err
    assert "'ACME_BUDGET_EXHAUSTED' is not a registered error code" in err
    assert "--codes" in err  # says how to fix it
    assert main(["rules", "check", "--codes", str(codes), str(rules)]) == 0
    assert capsys.readouterr().out.strip() == "ok: 1 rule"


def test_classify_with_a_user_code_uses_its_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    codes, rules = _acme_files(tmp_path)
    argv = ["classify", "--json", "--codes", str(codes), "--rules", str(rules)]
    assert main([*argv, "gateway: team budget exhausted for ml-platform"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["code"], row["rule"]) == ("ACME_BUDGET_EXHAUSTED", "acme-budget")
    assert row["hint"] == "Ask the platform team to raise the team budget."
    assert main(["classify", "--rules", str(rules), "x"]) == 1  # without the codes file


def test_codes_option_is_repeatable_and_loads_in_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    codes, rules = _acme_files(tmp_path)
    more = tmp_path / "more_codes.yaml"
    more.write_text(
        "codes:\n  - id: ACME_BUDGET_EXHAUSTED\n    override: true\n    level: 2\n"
        "    http_status: 429\n    hint: Wait for the budget to reset.\n"
        "  - id: ACME_GPU_POOL_DRAINED\n    level: 2\n",
        encoding="utf-8",
    )
    rules.write_text(
        ACME_RULES + "  - id: acme-gpu\n    code: ACME_GPU_POOL_DRAINED\n"
        "    patterns: ['gpu pool drained']\n",
        encoding="utf-8",
    )
    argv = ["--codes", str(codes), "--codes", str(more)]
    assert main(["rules", "check", *argv, str(rules)]) == 0
    assert capsys.readouterr().out.strip() == "ok: 2 rules"
    assert main(["classify", "--json", *argv, "--rules", str(rules), "team budget exhausted"]) == 0
    assert json.loads(capsys.readouterr().out)["hint"] == "Wait for the budget to reset."


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("codes:\n  - id: bad id\n    level: 1\n", ["codes[0].id"]),
        ("codes:\n  - id: INTERNAL\n    level: 1\n", ["INTERNAL", "already registered"]),
        ("codes: [\n", ["invalid YAML"]),
    ],
)
@pytest.mark.parametrize("command", ["rules", "classify"])
def test_a_bad_codes_file_is_reported_with_its_name(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    fragments: list[str],
    command: str,
) -> None:
    _, rules = _acme_files(tmp_path)
    bad = tmp_path / "bad_codes.yaml"
    bad.write_text(text, encoding="utf-8")
    argv = (
        ["rules", "check", "--codes", str(bad), str(rules)]
        if command == "rules"
        else ["classify", "--codes", str(bad), "--rules", str(rules), "team budget exhausted"]
    )
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"error: {bad}")
    for fragment in fragments:
        assert fragment in captured.err


def test_a_missing_codes_file_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, rules = _acme_files(tmp_path)
    absent = tmp_path / "absent.yaml"
    assert main(["rules", "check", "--codes", str(absent), str(rules)]) == 1
    err = capsys.readouterr().err
    assert str(absent) in err and "cannot read" in err


def test_codes_files_do_not_change_the_process_registry(tmp_path: Path) -> None:
    from errtrace.core.codes import registry

    codes, rules = _acme_files(tmp_path)
    assert main(["rules", "check", "--codes", str(codes), str(rules)]) == 0
    assert "ACME_BUDGET_EXHAUSTED" not in registry
