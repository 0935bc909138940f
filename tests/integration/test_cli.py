import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from rat_langchain.cli import main
from rat_langchain.sim import SimulatorThread

ROOT = Path(__file__).resolve().parents[2]


def test_demo_prints_the_side_by_side_table(
    capsys: pytest.CaptureFixture[str], no_openai_env: None
) -> None:
    argv = ["demo", "--concurrency", "3", "--latency-ms", "1", "--resilience-calls", "40"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "LangChain default, 3 at a time" in out
    assert "rat_langchain pooled, 3 at a time" in out
    assert "TCP connections" in out
    assert "p99 ms" in out
    ours = next(
        line for line in out.splitlines() if line.startswith("rat_langchain pool.chat_model")
    )
    assert ours.split()[2:4] == ["40", "0"]  # every call succeeded through limits and faults
    assert "requests that reached the server meanwhile: 0" in out
    assert "closed -> open -> half_open -> closed" in out
    assert "3/3 background verifications passed" in out
    timeline = {line.split()[0]: line for line in out.splitlines() if "extract_figures" in line}
    assert timeline["s8"].endswith("ms")  # the plan ran; its timeline was printed
    assert "level by level (each level waits for its slowest step)" in out
    table = out[out.index("The main job, end to end") :]
    total = next(line for line in table.splitlines() if line.startswith("total"))
    assert float(total.split()[1]) > float(total.split()[2])  # the old way took longer
    assert "chart written to" in table
    assert "chunks indexed in" in out
    assert "answer (simulated model)" in out


def test_demo_real_runs_against_whatever_endpoint_the_environment_names(
    capsys: pytest.CaptureFixture[str], sim: SimulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", sim.base_url)  # stands in for the real API here
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-real-mode")
    assert main(["demo", "--real", "--concurrency", "2"]) == 0
    out = capsys.readouterr().out
    assert "rat_langchain pooled, 2 at a time" in out
    assert f"Against {sim.base_url} with your config's limits." in out
    assert "answer 20 questions" in out
    assert "sk-test-real-mode" not in out


def test_demo_real_without_key_says_what_is_missing(no_openai_env: None) -> None:
    with pytest.raises(SystemExit, match="OPENAI_API_KEY"):
        main(["demo", "--real"])


def test_sim_rejects_bad_settings_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["sim", "--error-rate", "0.7", "--hang-rate", "0.7"])
    assert "fault rates add up" in capsys.readouterr().err


def test_readme_example_runs(capsys: pytest.CaptureFixture[str], no_openai_env: None) -> None:
    runpy.run_path(str(ROOT / "examples" / "swap_into_chain.py"), run_name="__main__")
    assert "20 answers" in capsys.readouterr().out


def test_index_folder_example_resumes_without_duplicates(
    capsys: pytest.CaptureFixture[str], no_openai_env: None, tmp_path: Path
) -> None:
    script = str(ROOT / "examples" / "index_folder.py")
    argv = ["index_folder.py", "--out", str(tmp_path)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", argv)
        runpy.run_path(script, run_name="__main__")
        first = capsys.readouterr().out
        runpy.run_path(script, run_name="__main__")  # again: everything is already there
        second = capsys.readouterr().out
    assert "4 chunks added, 0 already there, 0 failed" in first
    assert "0 chunks added, 4 already there, 0 failed" in second
    assert "circuit-breaker.md" in second  # the search finds the right file


def test_memory_example_writes_in_the_background_saves_and_loads(
    capsys: pytest.CaptureFixture[str], no_openai_env: None, tmp_path: Path
) -> None:
    argv = ["memory.py", "--out", str(tmp_path / "memories")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", argv)
        runpy.run_path(str(ROOT / "examples" / "memory.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "users: ['ana', 'ben'], ana has 3 memories" in out
    assert "ben has 1 memory" in out


def test_run_plan_example_runs_independent_steps_at_once(
    capsys: pytest.CaptureFixture[str], no_openai_env: None
) -> None:
    runpy.run_path(str(ROOT / "examples" / "run_plan.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert out.count("succeeded") == 4
    assert "critical path s1 -> s3 -> s4" in out
    assert "verified in the background: True" in out


def test_endpoint_or_simulator_picks_by_the_key(
    no_openai_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from rat_langchain import RatConfig
    from rat_langchain.sim import endpoint_or_simulator

    settings = tmp_path / "config.yaml"
    settings.write_text("performance:\n  batch_embeddings:\n    batch_size: 7\n")
    with endpoint_or_simulator(latency_ms=1) as endpoint:  # no key: a simulator
        config = RatConfig.load(settings).with_endpoint(**endpoint)
        assert config.endpoint.base_url is not None
        assert config.endpoint.base_url.startswith("http://127.0.0.1:")
        assert config.performance.batch_embeddings.batch_size == 7  # the file still applies
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real")
    with endpoint_or_simulator() as endpoint:  # a key: the configured endpoint
        assert endpoint == {}
        config = RatConfig.load(settings).with_endpoint(**endpoint)
        assert config.endpoint.base_url is None  # the SDK's default or OPENAI_BASE_URL
        assert config.performance.batch_embeddings.batch_size == 7


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["index", "{tmp}/missing", "--out", "{tmp}/out"], "does not exist"),
        (["index", "{tmp}/empty", "--out", "{tmp}/out"], "holds no .txt or .md text"),
        (["search", "{tmp}/nostore", "query"], "is not a saved FaissStore"),
        (["index", "{tmp}/docs", "--out", "{tmp}/out", "--config", "{tmp}/bad.yaml"], "rpm_limit"),
    ],
)
def test_cli_errors_are_one_line_with_a_nonzero_exit(
    tmp_path: Path, argv: list[str], problem: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("some text")
    (tmp_path / "bad.yaml").write_text("performance:\n  rate_limiting:\n    rpm_limit: -5\n")
    args = [a.format(tmp=tmp_path) for a in argv]
    done = subprocess.run(
        [sys.executable, "-m", "rat_langchain", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OPENAI_API_KEY": "sk-test"},
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    if "--config" in argv:  # a ConfigError keeps a line per key, under the one that names it
        assert lines[0].startswith("rat-langchain index: ConfigError: invalid configuration")
        lines = lines[1:]
    assert len(lines) == 1, done.stderr
    assert problem in lines[0]
    assert not (tmp_path / "out").exists()  # nothing written for a failed index
    debug = subprocess.run(
        [sys.executable, "-m", "rat_langchain", "--debug", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OPENAI_API_KEY": "sk-test"},
    )
    assert "Traceback" in debug.stderr


def test_an_interrupted_index_says_what_was_saved_and_resumes(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    """A Ctrl-C half-way printed the progress line's "done" and nothing of what was kept."""
    import signal

    corpus = tmp_path / "docs"
    corpus.mkdir()
    for i in range(60):
        (corpus / f"{i:02d}.md").write_text(f"document number {i} about topic {i % 7}")
    sim.configure(latency_ms=300)
    env = {**os.environ, "OPENAI_BASE_URL": sim.base_url, "OPENAI_API_KEY": "sk-test"}
    argv = [sys.executable, "-m", "rat_langchain", "index", str(corpus), "--out"]
    argv += [str(tmp_path / "ix"), "--batch-size", "5", "--checkpoint-every", "0"]
    with subprocess.Popen(
        [*argv, "--verbose"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as run:
        assert run.stdout is not None
        first = run.stdout.readline()  # the first checkpoint: a run under way, some saved
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=30)
    assert first.startswith("checkpoint: 5 documents saved")
    assert run.returncode == 130
    assert "done" not in out + err
    assert "indexing: " in err
    assert ", stopped" in err
    [said] = [line for line in err.splitlines() if line.startswith("interrupted:")]
    saved = int(said.split()[1])
    assert 5 <= saved < 60
    assert said.endswith(
        f"{saved} of 60 chunks saved in {tmp_path / 'ix'}; rerun the same command to resume"
    )
    sim.configure(latency_ms=1)
    again = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert again.returncode == 0, again.stderr
    assert (
        f"indexed {60 - saved} new, {saved} already there, 0 failed, of 60 chunks" in again.stdout
    )
    assert "checkpoint:" not in again.stdout  # checkpoint lines only with --verbose
    assert "indexing: 60/60 docs" in again.stderr  # against the whole corpus, held ones too


def test_index_batch_prints_costs_and_resumes(
    capsys: pytest.CaptureFixture[str],
    sim: SimulatorThread,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", sim.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-cli-batch")
    sim.configure(batch_completion_s=0.0)
    argv = ["index", str(ROOT / "examples" / "corpus"), "--out", str(tmp_path / "ix")]
    assert main([*argv, "--batch", "--poll", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "through the Batch API; took batch" in out
    assert "batches: 1 submitted, 0 resumed" in out
    assert main([*argv, "--batch", "--poll", "0.01"]) == 0  # all there: nothing submitted
    again = capsys.readouterr().out
    assert "indexed 0 new" in again
    assert sim.stats().batches_created == 1
    assert "sk-test-cli-batch" not in out + again
