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


def test_flops_json_without_backbones_lists_the_paper_seven_then_every_other_registered_one(monkeypatch):
    """What is listed, not what is counted (each count is tested in test_metrics_sustainability.py): the counter is
    replaced by a stub so the whole registry is listed in a second."""
    from trustser.backbones import BACKBONES
    from trustser.metrics import sustainability as sus

    class Counted:
        def __init__(self, name):
            self.name = name

        def as_dict(self):
            return {
                "backbone": self.name,
                "params": 1,
                "paper_gmacs": 0.0,
                "flops": 2,
                "macs": 1,
                "paper_table_gflops": None,
            }

    monkeypatch.setattr(sus.table, "count_flops", lambda name, *a, **k: Counted(name))  # where the table looks it up
    result = CliRunner().invoke(main, ["flops", "--json"])
    assert result.exit_code == 0, result.output
    names = [row["backbone"] for row in json.loads(result.output)]
    assert names[:7] == sus.paper_backbones() and sorted(names) == sorted(BACKBONES) and "hubert_base" in names


def test_hubert_base_is_listed_and_counted_like_the_paper_backbones():
    listed = {row["name"]: row for row in json.loads(CliRunner().invoke(main, ["ls", "--json"]).output)}
    assert listed["hubert_base"]["family"] == "ssl" and listed["hubert_base"]["layers"] == 12
    result = CliRunner().invoke(main, ["flops", "--backbone", "hubert_base", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["backbone"] == "hubert_base" and row["paper_table_gflops"] is None
    assert row["paper_gmacs"] == pytest.approx(41.69, abs=0.01)  # wav2vec 2.0 Base's shape, hence its count
    assert row["front_end_flops"] > 0 and row["params"] == pytest.approx(94.50e6, rel=0.001)
