"""The TinyStories TFDS builder on files written in the real files' format and quirks."""

import io
import os
import sys

import pytest

from tests.conftest import run_cli
from tinyscale import config as config_lib
from tinyscale.config import check as config_check
from tinyscale.data import pipeline, tinystories

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


def test_missing_manual_dir_is_one_line_exit_2(tmp_path, refused):
    result = refused("data", "prepare", "--dataset", "tinystories", "--manual-dir",
                     str(tmp_path / "nowhere"), "--data-dir", str(tmp_path / "data"),
                     f"--config.data.cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "manual_dir" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_empty_file_is_one_line_exit_2(tmp_path, refused):
    manual = tmp_path / "manual"
    write_files(manual, "original", "\r\n<|endoftext|>\r\n  \r\n")
    result = refused("data", "prepare", "--dataset", "tinystories", "--manual-dir", str(manual),
                     "--data-dir", str(tmp_path / "data"),
                     f"--config.data.cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "empty" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_a_second_manual_dir_gives_its_own_stories(tmp_path):
    """The cache is keyed by the manual dir's files: another folder is another corpus."""
    other = RAW.replace("Lily", "Rex")
    shown = []
    for name, text in (("first", RAW), ("second", other)):
        write_files(tmp_path / name, "original", (text + "<|endoftext|>\r\n") * 40)
        c = config_lib.get_config()
        c.data.update(dataset="tinystories", manual_dir=str(tmp_path / name), vocab_size=128,
                      cache_dir=str(tmp_path / "cache"))
        data_dir = pipeline.prepare(config_check.validate(c), progress=False)
        shown.append(pipeline.load_tokenizer(data_dir).decode(
            pipeline.tokens(data_dir, "train")[:400].tolist()))
    assert "Lily" in shown[0] and "Rex" not in shown[0]
    assert "Rex" in shown[1] and "Lily" not in shown[1]


def test_instruct_files_under_either_name(tmp_path, capsys):
    """The Hub's TinyStories-Instruct-*.txt, or TinyStoriesInstruct-*.txt; the Hub's name
    wins when both are there, and one stderr line says which files are read."""
    hub = tmp_path / "hub"
    write_files(hub, "instruct")
    assert sorted(os.listdir(hub)) == ["TinyStories-Instruct-train.txt",
                                       "TinyStories-Instruct-valid.txt"]
    old = tmp_path / "old"
    os.makedirs(old)
    for name in os.listdir(hub):
        os.rename(hub / name, old / name.replace("TinyStories-Instruct", "TinyStoriesInstruct"))
    both = tmp_path / "both"
    write_files(both, "instruct")
    for name in os.listdir(old):
        with open(both / name, "w") as f:
            f.write("An old story.\n")
    for folder, read in ((old, "TinyStoriesInstruct"), (both, "TinyStories-Instruct")):
        builder = tinystories.build("instruct", str(tmp_path / "tfds" / folder.name),
                                    str(folder))
        assert sorted(tinystories.texts(builder, "train")) == sorted(EXPECTED)
        lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("reading")]
        assert lines == [f"reading {read}-train.txt, {read}-valid.txt from {folder}"]


def test_missing_instruct_files_name_both_spellings(tmp_path, refused):
    os.makedirs(tmp_path / "manual")
    result = refused("data", "prepare", "--dataset", "tinystories", "--manual-dir",
                     str(tmp_path / "manual"), "--config.data.instruct=True",
                     "--data-dir", str(tmp_path / "data"),
                     f"--config.data.cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    for name in ("TinyStories-Instruct-train.txt", "TinyStoriesInstruct-train.txt",
                 "TinyStories-Instruct-valid.txt", "TinyStoriesInstruct-valid.txt"):
        assert name in result.stderr


def _curled(text: str) -> str:
    """`text` as typeset: curly quotes and apostrophes, a dash, an ellipsis, an accent."""
    out, opening = [], True
    for char in text:
        if char == '"':
            out.append("\u201c" if opening else "\u201d")
            opening = not opening
        else:
            out.append("\u2019" if char == "'" else char)
    return "".join(out).replace(". ", "\u2026 ", 1).replace(", ", " \u2014 ", 1) \
        + " Caf\u00e9 \u2018ok\u2019 \u2013 \u201cThe end.\u201d"


def _mojibake(text: str, form: str) -> str:
    """UTF-8 `text` read as cp1252 once, the way files of the wild hold it: `sloppy`
    keeps the bytes cp1252 lacks as C1 controls (browsers, ftfy), `replace` makes them
    U+FFFD, `ignore` drops them ("”" = E2 80 9D loses its 9D)."""
    raw = text.encode("utf-8")
    if form == "sloppy":
        return "".join(bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in raw)
    return raw.decode("cp1252", errors=form)


def _english_stories():
    from tests.controls import english_stories
    return english_stories()


@pytest.mark.parametrize("form", ["sloppy", "replace", "ignore"])
def test_clean_mends_real_mojibake(form):
    stories = [_curled(s) for s in _english_stories()[:8]]
    assert any("\u201d\n" in s or "\u201d " in s for s in stories)  # "â€" + space / line end
    for story in stories:
        broken = _mojibake(story, form)
        assert "\u00e2\u20ac" in broken and "\u00c3" in broken
        mended = tinystories.clean(broken)
        assert mended == tinystories.clean(story) == story.translate(tinystories._ASCII)
        assert not any(bad in mended for bad in ("\u00e2\u20ac", "\u00c3", "\u00c2",
                                                 "\u2020", "\ufffd"))


def test_clean_leaves_legitimate_text_alone():
    """Only the encoding is mended: accents, dashes, ligatures, full-width letters, HTML
    entities and no-break-space pairs stay (curly quotes still become ASCII)."""
    text = ("Zo\u00eb ate a cr\u00e8me br\u00fbl\u00e9e \u2014 na\u00efve \u2026 "
            "\ufb01ne \uff21 &amp; \u00c0 la carte, \u00bfs\u00ed? \u00a9 1\u00b0C "
            "\u201cHi,\u201d she said.")
    assert tinystories.clean(text) == text.replace("\u201c", '"').replace("\u201d", '"')


@pytest.mark.parametrize("raw", [RAW, RAW.rstrip(), RAW.replace("\r\n", "\n"),
                                 "<|endoftext|>\r\n" + RAW + "<|endoftext|> trailing\r\n"])
def test_streamed_split_equals_whole_text_split(tmp_path, raw):
    path = tmp_path / "stories.txt"
    path.write_bytes(raw.encode("utf-8"))
    assert list(tinystories.read_stories(str(path))) == list(tinystories.split_stories(raw))
    assert list(tinystories.stream_stories(io.StringIO(raw, newline="\n"))) \
        == list(tinystories.split_stories(raw))


def test_streaming_a_file_larger_than_a_buffer(tmp_path):
    """Stories across buffer boundaries, one line longer than a buffer, and mojibake and
    multi-byte characters split by them."""
    long_line = "The dog ran and ran. " * (4 * io.DEFAULT_BUFFER_SIZE // 20)
    broken = _mojibake(_curled('Tom said, "Let\'s go!"'), "ignore")
    raw = "".join(f"Story {i}: {broken} \u00e9\u2019\r\n{long_line if i == 7 else ''}\r\n"
                  "<|endoftext|>\r\n" for i in range(3000))
    path = tmp_path / "big.txt"
    path.write_bytes(raw.encode("utf-8"))
    assert os.path.getsize(path) > 20 * io.DEFAULT_BUFFER_SIZE
    streamed = list(tinystories.read_stories(str(path)))
    assert streamed == list(tinystories.split_stories(raw)) and len(streamed) == 3000
    assert streamed[7].endswith(long_line.strip()) and '"Let\'s go!"' in streamed[0]
