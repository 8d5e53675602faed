"""A TFDS builder for TinyStories (Eldan & Li, 2023), readable without TensorFlow.

The Hugging Face dataset `roneneldan/TinyStories` ships plain-text files in which
stories are separated by lines starting with `<|endoftext|>`. The builder downloads
them where the internet is reachable and otherwise reads them from a manual dir. It
writes `array_record` shards, which `tfds.data_source` reads with random access and
no TensorFlow (records come back as bytes).

Cleaning (the real files' quirks): Windows line ends, stray blank lines, empty
stories, and UTF-8 text that was decoded as cp1252 once ("â€™" for "’") are mended;
curly quotes become ASCII quotes so that a small vocabulary is not spent on them.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator

import tensorflow_datasets as tfds

from tinyscale.errors import TinyscaleError

_URL = "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/"
FILES = {
    "original": {"train": "TinyStories-train.txt", "validation": "TinyStories-valid.txt"},
    "gpt4": {"train": "TinyStoriesV2-GPT4-train.txt",
             "validation": "TinyStoriesV2-GPT4-valid.txt"},
    # TinyStories-Instruct: each entry's instructions (Features: / Words: / Summary: /
    # Random sentence: lines), then "Story:" and the story (data.instruct=True)
    "instruct": {"train": "TinyStoriesInstruct-train.txt",
                 "validation": "TinyStoriesInstruct-valid.txt"},
}
_URLS = {"instruct": "https://huggingface.co/datasets/roneneldan/TinyStoriesInstruct/"
                     "resolve/main/"}
_SEPARATOR = re.compile(r"^<\|endoftext\|>.*$", re.MULTILINE)
_MOJIBAKE = re.compile(r"[âÃÂ][\x80-\xbf\u0152-\u2122]+")
_ASCII = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "\u00a0": " "})


def _unmojibake(match: re.Match) -> str:
    """Undo one UTF-8 -> cp1252 mis-decoding (bytes cp1252 lacks map to latin-1)."""
    raw = bytearray()
    for char in match.group():
        try:
            raw += char.encode("cp1252")
        except UnicodeEncodeError:
            if ord(char) > 0xFF:
                return match.group()
            raw.append(ord(char))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return match.group()


def clean(story: str) -> str:
    """One story's text, mended: see the module docstring."""
    story = story.replace("\r\n", "\n").replace("\r", "\n")
    story = _MOJIBAKE.sub(_unmojibake, story).translate(_ASCII)
    story = re.sub(r"[ \t]+\n", "\n", story)
    return re.sub(r"\n{3,}", "\n\n", story).strip()


def split_stories(text: str) -> Iterator[str]:
    """The non-empty, cleaned stories of one file's text."""
    for story in _SEPARATOR.split(text.replace("\r\n", "\n")):
        story = clean(story)
        if story:
            yield story


@dataclasses.dataclass
class TinyStoriesConfig(tfds.core.BuilderConfig):
    files: dict = dataclasses.field(default_factory=dict)


class TinyStories(tfds.core.GeneratorBasedBuilder):
    """TinyStories: short stories in the vocabulary of a 3-4 year old."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [
        TinyStoriesConfig(name="original", description="GPT-3.5 and GPT-4 stories",
                          files=FILES["original"]),
        TinyStoriesConfig(name="gpt4", description="TinyStoriesV2: GPT-4 stories only",
                          files=FILES["gpt4"]),
        TinyStoriesConfig(name="instruct", description="TinyStories-Instruct: stories "
                          "after their instructions", files=FILES["instruct"]),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the .txt files of https://huggingface.co/datasets/roneneldan/TinyStories "
        "into the manual dir: " + ", ".join(f for v in FILES.values() for f in v.values()))

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            homepage="https://huggingface.co/datasets/roneneldan/TinyStories",
            citation="Eldan and Li, TinyStories, arXiv:2305.07759 (2023).")

    def _split_generators(self, dl_manager):
        files = self.builder_config.files
        manual = getattr(dl_manager, "_manual_dir", None)
        if manual and all(os.path.exists(os.path.join(manual, f)) for f in files.values()):
            paths = {split: os.path.join(manual, f) for split, f in files.items()}
        else:
            url = _URLS.get(self.builder_config.name, _URL)
            paths = dl_manager.download({s: url + f for s, f in files.items()})
        return {split: self._generate_examples(str(path)) for split, path in paths.items()}

    def _generate_examples(self, path: str):
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            text = f.read()
        for index, story in enumerate(split_stories(text)):
            yield index, {"text": story}


def build(version: str, data_dir: str, manual_dir: str = "") -> TinyStories:
    """Download (or read from `manual_dir`) and prepare; the ready builder."""
    builder = TinyStories(config=version, data_dir=data_dir, file_format="array_record")
    if manual_dir:
        missing = [f for f in FILES[version].values()
                   if not os.path.exists(os.path.join(os.path.expanduser(manual_dir), f))]
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


def from_config(d) -> TinyStories:
    """The builder for config.data `d`: TFDS's folder under the cache is keyed by the
    manual dir's files, so stories from another folder are never served from the cache."""
    from tinyscale.data import location
    source = location.source_fingerprint(d.manual_dir) or "download"
    return build("instruct" if d.instruct else d.tinystories_version,
                 os.path.join(os.path.expanduser(d.cache_dir), "tfds", source), d.manual_dir)


def texts(builder: TinyStories, split: str) -> Iterator[str]:
    """The stories of one split, read through the TensorFlow-free data source."""
    source = builder.as_data_source(split=split)
    for i in range(len(source)):
        text = source[i]["text"]
        yield text.decode() if isinstance(text, bytes) else text
