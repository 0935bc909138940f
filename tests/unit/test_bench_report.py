"""The bench report: tables are read from benchmark output and plotted."""

from __future__ import annotations

from pathlib import Path

from rat_langchain._bench_report import machine, plot, tables

OUTPUT = """some text
| executor | median | p90 |
|---|---:|---:|
| eager | 1.025 | 1.042 |
| **levels** | 1.352 | 1.822 |
between tables
| a | b |
|---|---|
| x | n/a |
"""


def test_tables_are_read_and_the_first_numeric_column_is_plotted(tmp_path: Path) -> None:
    found = tables(OUTPUT)
    assert found[0] == [
        ["executor", "median", "p90"],
        ["eager", "1.025", "1.042"],
        ["**levels**", "1.352", "1.822"],
    ]
    assert found[1] == [["a", "b"], ["x", "n/a"]]
    assert plot(found[0], "plans", tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plot(found[1], "nothing numeric", tmp_path / "q.png")
    assert not (tmp_path / "q.png").exists()
    assert "CPUs, Python 3." in machine()
