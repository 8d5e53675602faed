import numpy as np
import pytest

from tests.conftest import run_cli
from tinyscale.data import pipeline, tokenizer
from tinyscale.data.synthstories import stories


def test_tokenizer_round_trip(synth_data):
    _, data_dir = synth_data
    sp = tokenizer.load(f"{data_dir}/tokenizer.model")
    for s in stories(20, seed=99, split="eval"):  # text the tokenizer never saw
        assert sp.decode(sp.encode(s.text)) == s.text
    meta = pipeline.load_meta(data_dir)
    assert 2.0 < meta["bytes_per_token"] < 8.0
    assert meta["vocab_size"] == 512


def test_token_stream_holds_every_story(synth_data):
    c, data_dir = synth_data
    stream = pipeline.tokens(data_dir, "eval")
    assert int((np.asarray(stream) == tokenizer.EOS_ID).sum()) == c.data.eval_stories
    assert stream[-1] == tokenizer.EOS_ID


def test_prepare_is_cached(synth_data):
    c, data_dir = synth_data
    assert pipeline.prepare(c, progress=False) == data_dir


def test_batches_are_a_pure_function_of_the_step(synth_data):
    _, data_dir = synth_data
    ref = pipeline.Batches(data_dir, "train", 64, 8, seed=3)
    straight = [ref.batch(s) for s in range(50)]
    resumed = pipeline.Batches(data_dir, "train", 64, 8, seed=3)
    for k in (0, 17, 49):
        assert np.array_equal(resumed.batch(k), straight[k])
    assert straight[0].shape == (8, 65) and straight[0].dtype == np.int32
    other_seed = pipeline.Batches(data_dir, "train", 64, 8, seed=4)
    assert not np.array_equal(other_seed.batch(0), straight[0])


def test_batches_cover_an_epoch_then_reshuffle(synth_data):
    _, data_dir = synth_data
    b = pipeline.Batches(data_dir, "train", 64, 8, seed=0)
    steps = b.n_sequences // 8
    ids = np.concatenate([b.sequence_ids(s) for s in range(steps)])
    assert len(set(ids.tolist())) == len(ids)  # no sequence twice within an epoch
    assert not np.array_equal(b.sequence_ids(steps + 1), b.sequence_ids(1))


def test_inputs_and_targets_are_contiguous_text(synth_data):
    _, data_dir = synth_data
    b = pipeline.Batches(data_dir, "train", 64, 4, seed=0)
    stream = np.asarray(b.stream)
    row = b.batch(5)[0]
    start = int(b.sequence_ids(5)[0]) * 64
    assert np.array_equal(row, stream[start:start + 65])


@pytest.mark.parametrize("hosts", [2, 4])
def test_hosts_together_read_the_single_host_batch(synth_data, hosts):
    _, data_dir = synth_data
    one = pipeline.Batches(data_dir, "train", 32, 8, seed=1)
    parts = [pipeline.Batches(data_dir, "train", 32, 8, seed=1, process_index=p,
                              process_count=hosts) for p in range(hosts)]
    for step in (0, 3, 1000):
        slices = [p.sequence_ids(step) for p in parts]
        assert np.array_equal(np.concatenate(slices), one.sequence_ids(step))
        assert len(set(np.concatenate(slices).tolist())) == 8  # no overlap
        assert np.array_equal(np.concatenate([p.batch(step) for p in parts]), one.batch(step))


def test_eval_batches_are_fixed(synth_data):
    _, data_dir = synth_data
    a = pipeline.Batches(data_dir, "eval", 64, 4, seed=0)
    b = pipeline.Batches(data_dir, "eval", 64, 4, seed=123)
    assert np.array_equal(a.eval_batch(2), b.eval_batch(2))


def test_show_prints_stories_and_counts(synth_data):
    _, data_dir = synth_data
    result = run_cli("data", "show", "--data-dir", data_dir, "--stories", "2")
    assert result.returncode == 0, result.stderr
    assert "1,500 stories" in result.stdout and "--- eval story 1" in result.stdout


@pytest.mark.parametrize("args, knob", [
    (["data", "prepare", "--dataset", "wikipedia"], "data.dataset"),
    (["data", "prepare", "--config.data.vocab_size=10"], "data.vocab_size"),
    (["data", "prepare", "--config.model.n_heads=3"], "model.n_heads"),
    (["data", "prepare", "--config.data.nope=1"], "data.nope"),
    (["data", "prepare", "--config.train.lr=fast"], "train.lr"),
    (["data", "show", "--data-dir", "/nonexistent"], "data prepare"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, knob, refused):
    cache = [f"--config.data.cache_dir={tmp_path}"] if args[1] == "prepare" else []
    result = refused(*args, *cache)
    assert result.returncode == 2
    assert knob in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_prepare_into_an_existing_folder_keeps_its_files(synth_data, tmp_path):
    c, _ = synth_data
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes\n")
    result = run_cli("data", "prepare", "--data-dir", str(folder),
                     f"--config.data.cache_dir={c.data.cache_dir}",
                     f"--config.data.train_stories={c.data.train_stories}",
                     f"--config.data.eval_stories={c.data.eval_stories}",
                     f"--config.data.vocab_size={c.data.vocab_size}")
    assert result.returncode == 0, result.stderr
    assert (folder / "notes.txt").read_text() == "my notes\n"
    assert (folder / "meta.json").exists() and (folder / "train.bin").exists()
    again = run_cli("data", "prepare", "--data-dir", str(folder),
                    f"--config.data.cache_dir={c.data.cache_dir}",
                    f"--config.data.train_stories={c.data.train_stories}",
                    f"--config.data.eval_stories={c.data.eval_stories}",
                    f"--config.data.vocab_size={c.data.vocab_size}")
    assert again.returncode == 0, again.stderr  # prepared already: checked, not redone
