"""The TinyStories TFDS builder on files written in the real files' format and quirks."""

import os
import sys

import pytest

from tests.conftest import run_cli
from tinyscale.data import tinystories

# Stories as the Hugging Face files hold them, with their quirks: Windows line ends,
# blank lines, an empty story, and UTF-8 read as cp1252 once ("â€™" for "’").
RAW = (
    "Once upon a time, there was a little girl named Lily.\r\n"
    "She liked to play outside.\r\n"
    "<|endoftext|>\r\n"
    "\r\n"
    "Tom said, \u00e2\u20ac\u0153Let\u00e2\u20ac\u2122s go!\u00e2\u20ac\u009d\r\n"
    "They ran to the park.\r\n"
    "<|endoftext|>\r\n"
    "<|endoftext|>\r\n"
    "   \r\n"
    "\r\n"
    "The sun was warm.\r\n\r\n\r\n\r\nThe end.\r\n"
)
EXPECTED = [
    "Once upon a time, there was a little girl named Lily.\nShe liked to play outside.",
    "Tom said, \"Let's go!\"\nThey ran to the park.",
    "The sun was warm.\n\nThe end.",
]


def write_files(folder, version, text=RAW):
    os.makedirs(folder, exist_ok=True)
    for name in tinystories.FILES[version].values():
        with open(os.path.join(folder, name), "w", encoding="utf-8", newline="") as f:
            f.write(text)


def test_split_and_clean():
    assert list(tinystories.split_stories(RAW)) == EXPECTED


@pytest.mark.parametrize("version", ["original", "gpt4"])
def test_builder_reads_back_without_tensorflow(tmp_path, version):
    manual = tmp_path / "manual"
    write_files(manual, version)
    builder = tinystories.build(version, str(tmp_path / "tfds"), str(manual))
    assert any(f.endswith(".array_record-00000-of-00001")
               for f in os.listdir(builder.data_dir))
    for split in ("train", "validation"):
        assert sorted(tinystories.texts(builder, split)) == sorted(EXPECTED)
    assert "tensorflow" not in sys.modules


def test_prepare_tinystories_through_the_cli(tmp_path):
    manual = tmp_path / "manual"
    write_files(manual, "original", (RAW + "<|endoftext|>\r\n") * 40)
    result = run_cli("data", "prepare", "--dataset", "tinystories", "--manual-dir", str(manual),
                     "--data-dir", str(tmp_path / "data"), "--config.data.vocab_size=128",
                     f"--config.data.cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 0, result.stderr
    assert "120 stories" in result.stdout
    assert any(story.split("\n")[0] in result.stdout for story in EXPECTED)


def test_missing_manual_dir_is_one_line_exit_2(tmp_path):
    result = run_cli("data", "prepare", "--dataset", "tinystories", "--manual-dir",
                     str(tmp_path / "nowhere"), "--data-dir", str(tmp_path / "data"),
                     f"--config.data.cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "manual_dir" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_empty_file_is_one_line_exit_2(tmp_path):
    manual = tmp_path / "manual"
    write_files(manual, "original", "\r\n<|endoftext|>\r\n  \r\n")
    result = run_cli("data", "prepare", "--dataset", "tinystories", "--manual-dir", str(manual),
                     "--data-dir", str(tmp_path / "data"),
                     f"--config.data.cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "empty" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_a_second_manual_dir_gives_its_own_stories(tmp_path):
    """The cache is keyed by the manual dir's files: another folder is another corpus."""
    from tinyscale import config as config_lib
    from tinyscale.data import pipeline
    other = RAW.replace("Lily", "Rex")
    shown = []
    for name, text in (("first", RAW), ("second", other)):
        write_files(tmp_path / name, "original", (text + "<|endoftext|>\r\n") * 40)
        c = config_lib.get_config()
        c.data.update(dataset="tinystories", manual_dir=str(tmp_path / name), vocab_size=128,
                      cache_dir=str(tmp_path / "cache"))
        data_dir = pipeline.prepare(config_lib.validate(c), progress=False)
        shown.append(pipeline.load_tokenizer(data_dir).decode(
            pipeline.tokens(data_dir, "train")[:400].tolist()))
    assert "Lily" in shown[0] and "Rex" not in shown[0]
    assert "Rex" in shown[1] and "Lily" not in shown[1]
