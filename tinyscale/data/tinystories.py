"""A TFDS builder for TinyStories (Eldan & Li, 2023), readable without TensorFlow.

The Hugging Face dataset `roneneldan/TinyStories` ships plain-text files in which
stories are separated by lines starting with `<|endoftext|>`. The builder downloads
them where the internet is reachable and otherwise reads them from a manual dir. It
writes `array_record` shards, which `tfds.data_source` reads with random access and
no TensorFlow (records come back as bytes).

Cleaning (the real files' quirks): Windows line ends, stray blank lines, empty
stories, and UTF-8 text that was decoded as cp1252 once ("â€™" for "’") are mended
(ftfy, after the lost-byte rule of `clean`); curly quotes become ASCII quotes so that a
small vocabulary is not spent on them.

TinyStories-Instruct's files are `TinyStories-Instruct-{train,valid}.txt` on the Hub;
copies named `TinyStoriesInstruct-*.txt` (tinyscale's former spelling) are read too.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import sys
from collections.abc import Iterable, Iterator

import ftfy

from tinyscale.data import location
from tinyscale.errors import TinyscaleError

_URL = "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/"
FILES = {
    "original": {"train": "TinyStories-train.txt", "validation": "TinyStories-valid.txt"},
    "gpt4": {"train": "TinyStoriesV2-GPT4-train.txt",
             "validation": "TinyStoriesV2-GPT4-valid.txt"},
    # TinyStories-Instruct: each entry's instructions (Features: / Words: / Summary: /
    # Random sentence: lines), then "Story:" and the story (data.instruct=True)
    "instruct": {"train": "TinyStories-Instruct-train.txt",
                 "validation": "TinyStories-Instruct-valid.txt"},
}
# other names a file may have in the manual dir, read when the Hub's name is absent
_ALIASES = {"TinyStories-Instruct-train.txt": "TinyStoriesInstruct-train.txt",
            "TinyStories-Instruct-valid.txt": "TinyStoriesInstruct-valid.txt"}
_URLS = {"instruct": "https://huggingface.co/datasets/roneneldan/TinyStoriesInstruct/"
                     "resolve/main/"}
_SEPARATOR = re.compile(r"^<\|endoftext\|>.*$", re.MULTILINE)
# What a byte 0x80-0xBF (a UTF-8 continuation byte) reads as in cp1252; the five bytes
# cp1252 leaves undefined read as the C1 control of the same number (ftfy's
# "sloppy-windows-1252", as browsers decode).
_CP1252_CONTINUATIONS = "".join(
    bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in range(0x80, 0xC0))
# "”" is E2 80 9D; read as cp1252 the 0x9D is undefined and is often dropped (or became
# U+FFFD), leaving "â€" before a space, a line end or the end of the text. ftfy would
# read "â€ " as "†" (E2 80 A0 with its no-break space lost), never right in a story.
_LOST_BYTE = re.compile(f"â€(?:\ufffd|(?![{re.escape(_CP1252_CONTINUATIONS)}]))")
# Text that may hold mojibake: ftfy is slow, so it reads only these stories (UTF-8
# mis-read as cp1252 / latin-1 / MacRoman / cp437 always leaves a character of U+0080-
# U+00FF; as windows-1251, "вЂ").
_SUSPECT = re.compile("[\x80-\xff]|вЂ")
# ftfy mends encodings only: its other fixes (quotes, ligatures, widths, NFC, HTML
# entities, control characters, line breaks) would change legitimate text.
_FTFY = ftfy.TextFixerConfig(
    unescape_html=False, remove_terminal_escapes=False, uncurl_quotes=False,
    fix_latin_ligatures=False, fix_character_width=False, fix_line_breaks=False,
    remove_control_chars=False, normalization=None, explain=False)
_ASCII = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "\u00a0": " "})


def clean(story: str) -> str:
    """One story's text, mended: see the module docstring."""
    story = story.replace("\r\n", "\n").replace("\r", "\n")
    if _SUSPECT.search(story):
        story = ftfy.fix_text(_LOST_BYTE.sub("”", story), _FTFY)
    story = story.translate(_ASCII)
    story = re.sub(r"[ \t]+\n", "\n", story)
    return re.sub(r"\n{3,}", "\n\n", story).strip()


def split_stories(text: str) -> Iterator[str]:
    """The non-empty, cleaned stories of one file's text."""
    for story in _SEPARATOR.split(text.replace("\r\n", "\n")):
        story = clean(story)
        if story:
            yield story


def stream_stories(lines: Iterable[str]) -> Iterator[str]:
    """`split_stories` of a file read line by line (lines split at "\\n" only, line ends
    kept): each story is yielded at its separator line, so a file never sits in memory."""
    story: list[str] = []
    for line in lines:
        if line.startswith("<|endoftext|>"):  # the whole line goes, as in split_stories
            if text := clean("".join(story)):
                yield text
            story = []
        else:
            story.append(line)
    if text := clean("".join(story)):
        yield text


def read_stories(path: str) -> Iterator[str]:
    """The non-empty, cleaned stories of one TinyStories file, streamed."""
    with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
        yield from stream_stories(f)


def manual_files(manual_dir: str, version: str) -> tuple[dict[str, str], list[str]]:
    """({split: path} of the files found in the manual dir, the names of those missing,
    each with its other spelling)."""
    folder = os.path.expanduser(manual_dir)
    found, missing = {}, []
    for split, name in FILES[version].items():
        names = [name] + ([_ALIASES[name]] if name in _ALIASES else [])
        path = next((os.path.join(folder, n) for n in names
                     if os.path.exists(os.path.join(folder, n))), None)
        if path:
            found[split] = path
        else:
            missing.append(" or ".join(names))
    return found, missing


@functools.cache
def _builder_class():
    """The TFDS builder class, made when TinyStories is first built or read."""
    import tensorflow_datasets as tfds  # heavy: 0.13 s of every command's start otherwise

    @dataclasses.dataclass
    class TinyStoriesConfig(tfds.core.BuilderConfig):
        files: dict = dataclasses.field(default_factory=dict)

    class TinyStories(tfds.core.GeneratorBasedBuilder):
        """TinyStories: short stories in the vocabulary of a 3-4 year old."""

        # a new version re-reads the .txt files into TFDS's cache; prepared data dirs (and
        # so trained runs' tokenizers) are kept as they were
        VERSION = tfds.core.Version("1.1.0")
        RELEASE_NOTES = {"1.1.0": "Mojibake mended by ftfy and the lost-byte rule for \u201d."}
        BUILDER_CONFIGS = [
            TinyStoriesConfig(name="original", description="GPT-3.5 and GPT-4 stories",
                              files=FILES["original"]),
            TinyStoriesConfig(name="gpt4", description="TinyStoriesV2: GPT-4 stories only",
                              files=FILES["gpt4"]),
            TinyStoriesConfig(name="instruct", description="TinyStories-Instruct: stories "
                              "after their instructions", files=FILES["instruct"]),
        ]
        MANUAL_DOWNLOAD_INSTRUCTIONS = (
            "Download the .txt files of https://huggingface.co/datasets/roneneldan/"
            "TinyStories (and roneneldan/TinyStoriesInstruct) into the manual dir: "
            + ", ".join(f for v in FILES.values() for f in v.values()))

        def _info(self) -> tfds.core.DatasetInfo:
            return self.dataset_info_from_configs(
                features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
                homepage="https://huggingface.co/datasets/roneneldan/TinyStories",
                citation="Eldan and Li, TinyStories, arXiv:2305.07759 (2023).")

        def _split_generators(self, dl_manager):
            files, version = self.builder_config.files, self.builder_config.name
            manual = getattr(dl_manager, "_manual_dir", None)
            paths, missing = manual_files(str(manual), version) if manual else ({}, [True])
            if not missing:
                if any(f in _ALIASES for f in files.values()):  # two spellings: say which
                    print(f"reading {', '.join(os.path.basename(p) for p in paths.values())} "
                          f"from {manual}", file=sys.stderr)
            else:
                url = _URLS.get(version, _URL)
                paths = dl_manager.download({s: url + f for s, f in files.items()})
            return {split: self._generate_examples(str(path)) for split, path in paths.items()}

        def _generate_examples(self, path: str):
            for index, story in enumerate(read_stories(path)):
                yield index, {"text": story}

    return TinyStories


def build(version: str, data_dir: str, manual_dir: str = ""):
    """Download (or read from `manual_dir`) and prepare; the ready builder."""
    import tensorflow_datasets as tfds  # heavy: see _builder_class
    builder = _builder_class()(config=version, data_dir=data_dir,
                               file_format="array_record")
    if manual_dir:
        _, missing = manual_files(manual_dir, version)
        if missing:
            raise TinyscaleError(
                f"config.data.manual_dir={manual_dir!r} lacks {', '.join(missing)}: put the "
                "TinyStories .txt files there or fix --config.data.manual_dir.")
    tfds.disable_progress_bar()  # tinyscale prints its own progress
    config = tfds.download.DownloadConfig(
        manual_dir=os.path.expanduser(manual_dir) if manual_dir else None)
    try:
        builder.download_and_prepare(download_config=config, file_format="array_record")
    except Exception as error:  # tfds wraps network failures in several types
        if "No examples were yielded" in str(error):
            raise TinyscaleError(
                f"a TinyStories {version} file holds no story (it is empty or only "
                "separators): replace it with the real file in config.data.manual_dir.") \
                from None
        if manual_dir:
            raise
        raise TinyscaleError(
            f"could not download TinyStories ({type(error).__name__}): without internet, "
            "set --manual-dir (config.data.manual_dir) to a folder with the .txt files.") \
            from None
    return builder


def from_config(d):
    """The builder for config.data `d`: TFDS's folder under the cache is keyed by the
    manual dir's files, so stories from another folder are never served from the cache."""
    source = location.source_fingerprint(d.manual_dir) or "download"
    return build("instruct" if d.instruct else d.tinystories_version,
                 os.path.join(os.path.expanduser(d.cache_dir), "tfds", source), d.manual_dir)


def texts(builder, split: str) -> Iterator[str]:
    """The stories of one split, read through the TensorFlow-free data source."""
    source = builder.as_data_source(split=split)
    for i in range(len(source)):
        text = source[i]["text"]
        yield text.decode() if isinstance(text, bytes) else text
