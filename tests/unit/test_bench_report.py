"""The bench report: tables are read from benchmark output and plotted."""

from __future__ import annotations

from pathlib import Path

from benchmarks.report import machine, plot, tables

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


def test_a_partial_run_keeps_the_other_sections(tmp_path: Path, monkeypatch: object) -> None:
    from benchmarks import report as _bench_report

    report = tmp_path / "benchmarks.md"
    report.write_text(
        "# Benchmarks\n\nold header\n\n## bench_a: A.\n\nold a\n\n## bench_b: B.\n\nold b\n"
    )
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "bench_b.py").write_text(
        '"""B again."""\nprint("| x | n |\\n|---|---|\\n| r | 2 |")\n'
    )
    monkeypatch.chdir(tmp_path)  # type: ignore[attr-defined]
    assert _bench_report.run(["b"], report, plots=False) == 0
    text = report.read_text()
    assert "old a" in text  # kept
    assert "old b" not in text  # replaced
    assert "| r | 2 |" in text
    assert text.index("## bench_a") < text.index("## bench_b")
