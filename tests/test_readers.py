"""Commands that only read a run change nothing in it: with the newest checkpoint
folder of a finished run emptied (a disk that filled, a copy cut short), `sample`,
`eval` and `export` use the previous checkpoint, say which they skipped, and leave
every file of the run as it was (eval adds its eval-step<N>.json beside eval.json,
which it never replaces with an older step's)."""

import json
import shutil

import pytest

from tests.conftest import run_cli
from tests.test_malformed import SMOKE, md5s


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("readers")
    result = run_cli("train", "--config", SMOKE, "--workdir", str(root / "run"),
                     f"--config.data.cache_dir={root / 'cache'}", "--config.train.steps=20",
                     "--config.eval.prompts=2", "--config.eval.max_new_tokens=8")
    assert result.returncode == 0, result.stderr
    return root


def test_a_damaged_newest_checkpoint_is_skipped_and_left_alone(finished, tmp_path, command):
    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    newest = run / "checkpoints" / "20"
    shutil.rmtree(newest)
    newest.mkdir()  # the folder is there, its files are not
    before = md5s(run)
    sample = command("sample", str(run), "--prompt", "Once upon a time", "--max-new-tokens",
                     "5")
    assert sample.returncode == 0, sample.stderr
    assert "checkpoint 20" in sample.stderr and "left as it is" in sample.stderr
    evaluated = command("eval", str(run), "--config.eval.prompts=2",
                        "--config.eval.max_new_tokens=8")
    assert evaluated.returncode == 0, evaluated.stderr
    exported = command("export", str(run), "--format", "hf", "--out", str(tmp_path / "hf"))
    assert exported.returncode == 0, exported.stderr
    assert "step 10" in exported.stdout + exported.stderr
    after = md5s(run)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing changed
    assert set(after) - set(before) == {"eval-step10.json", "samples-step10.jsonl"}
    assert json.loads((run / "eval-step10.json").read_text())["step"] == 10
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["10", "20"]


def test_eval_with_other_settings_leaves_the_runs_evaluation_alone(finished, tmp_path, command):
    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    before = md5s(run)
    evaluated = command("eval", str(run), "--config.eval.prompts=2",
                        "--config.eval.max_new_tokens=6")
    assert evaluated.returncode == 0, evaluated.stderr
    after = md5s(run)
    assert {k: v for k, v in after.items() if k in before} == before  # eval.json as it was
    new = sorted(set(after) - set(before))
    assert len(new) == 2 and new[0].startswith("eval-") and new[1].startswith("samples-")
    result = json.loads((run / new[0]).read_text())
    assert result["overrides"] == {"eval.max_new_tokens": 6}
    assert result["settings"]["max_new_tokens"] == 6


def test_a_run_copied_alone_evaluates_samples_and_exports_without_its_data(finished,
                                                                            tmp_path, command):
    """The run keeps its tokenizer and held-out split (data/): copied to a machine whose
    cache is empty, it is read without preparing any data."""
    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    assert sorted(p.name for p in (run / "data").iterdir()) == [
        "eval.bin", "meta.json", "tokenizer.model"]
    elsewhere = tmp_path / "empty-cache"  # another machine: nothing prepared there
    config = json.loads((run / "config.json").read_text())
    config["data"]["cache_dir"] = str(elsewhere)
    (run / "config.json").write_text(json.dumps(config))
    sample = command("sample", str(run), "--prompt", "Once upon a time", "--max-new-tokens",
                     "5")
    assert sample.returncode == 0, sample.stderr
    assert "the run's own tokenizer" in sample.stderr
    evaluated = command("eval", str(run))
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads((run / "eval.json").read_text())
    assert result["loss"] > 0 and "coherence" in result
    exported = command("export", str(run), "--format", "hf", "--out", str(tmp_path / "hf"))
    assert exported.returncode == 0, exported.stderr
    assert not elsewhere.exists()  # no data was prepared

