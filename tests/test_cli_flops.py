"""``trustser flops``: the sustainability table for the backbones, as text and as JSON objects."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from trustser.cli import main


def test_flops_json_gives_the_paper_convention_beside_the_complete_count():
    result = CliRunner().invoke(main, ["flops", "--backbone", "apc", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["backbone"] == "apc"
    assert {"params", "paper_gmacs", "flops", "macs"} <= set(row)
    assert row["paper_gmacs"] == pytest.approx(2.5, rel=0.01)  # the method's Table 4 figure for APC
    assert row["flops"] > row["macs"] > 0 and row["params"] == pytest.approx(4.20e6, rel=0.01)


def test_flops_table_names_the_convention_and_unknown_backbones_are_one_line_errors():
    result = CliRunner().invoke(main, ["flops", "--backbone", "apc"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:2] == ["backbone", "params(M)"] and lines[1].split()[0] == "apc"
    assert "attention products and mel front end not counted" in result.output
    bad = CliRunner().invoke(main, ["flops", "--backbone", "whisperx"])
    assert bad.exit_code != 0 and "unknown backbone 'whisperx'" in bad.output and "Traceback" not in bad.output
