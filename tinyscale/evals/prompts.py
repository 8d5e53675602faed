"""Prompt sets: stories cut mid-sentence, as the TinyStories paper evaluates.

* SynthStories: stories of the `prompt` split (a seed range no training story uses),
  each with the generator's entity records, cut inside one of its middle sentences;
* TinyStories: validation stories cut the same way, on their own characters (sentence
  ends found on the raw string, so prompt + reference is the story, byte for byte);
* the paper's own `Evaluation prompts.yaml`, when the user has the file.
"""

from __future__ import annotations

import dataclasses
import json
import random

from tinyscale.data import synthstories
from tinyscale.data.synthstories import instruct
from tinyscale.data.synthstories.text import detokenize, split_sentences, tokenize
from tinyscale.errors import TinyscaleError
from tinyscale.evals.sentences import WORD_START, sentence_spans


@dataclasses.dataclass(frozen=True)
class Prompt:
    text: str                      # the cut story, ending mid-sentence (after its header)
    reference: str                 # the rest of the original story (a true continuation)
    story: synthstories.Story | None = None  # entity records, on SynthStories
    header: str = ""               # instruct data: the instruction lines and "Story: "
    instructions: instruct.Instructions | None = None

    @property
    def story_text(self) -> str:
        """The story's beginning, without the instructions."""
        return self.text[len(self.header):]


def cut_story(text: str, rng: random.Random, early: bool = False) -> tuple[str, str]:
    """(prompt, rest): cut inside a sentence in the middle of the story (`early`: in its
    second or third sentence, leaving an instructed story's instructions to follow)."""
    sentences = split_sentences(tokenize(text))
    span = range(1, min(3, len(sentences))) if early else range(
        len(sentences) * 2 // 5, max(1, len(sentences) * 7 // 10))
    candidates = [i for i in span if len(sentences[i]) >= 5] or [len(sentences) // 2]
    i = rng.choice(candidates)
    words = [k for k, t in enumerate(sentences[i]) if t[:1].isalpha()]
    cut = rng.choice(words[2:-1] or words[-1:])  # keep >= 2 words, cut before a word
    before = [detokenize(s) for s in sentences[:i]] + [detokenize(sentences[i][:cut])]
    after = [detokenize(sentences[i][cut:])] + [detokenize(s) for s in sentences[i + 1:]]
    return " ".join(before), " " + " ".join(after)


def cut_text(text: str, rng: random.Random, early: bool = False) -> tuple[str, str]:
    """(prompt, rest) of a real story, cut on its own characters before a word inside a
    sentence in its middle (`early`: its second or third sentence): prompt + rest is the
    story, character for character (paragraph breaks, quotes and contractions kept)."""
    spans = sentence_spans(text)
    span = range(1, min(3, len(spans))) if early else range(
        len(spans) * 2 // 5, max(1, len(spans) * 7 // 10))
    words = {i: [m.start() + spans[i][0] for m in WORD_START.finditer(
        text[spans[i][0]:spans[i][1]])] for i in range(len(spans))}
    candidates = [i for i in span if len(words[i]) >= 5] or [
        max(range(len(spans)), key=lambda i: len(words[i]))]
    i = rng.choice(candidates)
    starts = words[i]
    cut = rng.choice(starts[2:-1] or starts[-1:])  # keep >= 2 words, cut before a word
    while cut > 0 and text[cut - 1].isspace():     # the space goes with the rest
        cut -= 1
    return text[:cut], text[cut:]


def synth_prompts(count: int, seed: int = 0, richness: float = 1.0,
                  instructed: bool = False) -> list[Prompt]:
    if instructed:  # SynthStories-Instruct: the instructions, then the story's beginning
        out = []
        for s in instruct.stories(count, seed, "prompt", richness):
            header = s.instructions.header()
            text, rest = cut_story(s.story.text, random.Random(s.story.text), early=True)
            out.append(Prompt(header + text, rest, s.story, header, s.instructions))
        return out
    prompts = []
    for story in synthstories.stories(count, seed, "prompt", richness):
        text, rest = cut_story(story.text, random.Random(story.text))
        prompts.append(Prompt(text, rest, story))
    return prompts


def text_prompts(stories, count: int, instructed: bool = False) -> list[Prompt]:
    """Prompts cut from real stories (e.g. TinyStories validation); `instructed`: entries
    of TinyStories-Instruct, each prompt its instructions and the story's beginning."""
    prompts = []
    for entry in stories:
        if len(prompts) == count:
            break
        instructions, header, text = instruct.parse(entry) if instructed else (None, "", entry)
        if len(text.split()) >= 20:
            prompt, rest = cut_text(text, random.Random(text), early=instructed)
            prompts.append(Prompt(header + prompt, rest, None, header, instructions))
    return prompts


def load_paper_prompts(path: str) -> list[Prompt]:
    """The TinyStories paper's `Evaluation prompts.yaml`: a list of prompt strings."""
    import yaml  # optional: pyyaml, the eval extra
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as error:
        raise TinyscaleError(f"cannot read the prompts file {path} ({error}): pass the "
                             "paper's 'Evaluation prompts.yaml'.") from None
    items = data if isinstance(data, list) else next(
        (v for v in (data or {}).values() if isinstance(v, list)), None)
    if not items:
        raise TinyscaleError(f"{path} holds no list of prompts: expected a YAML list.")
    texts = [x if isinstance(x, str) else x.get("prompt", "") for x in items]
    return [Prompt(t.rstrip("\n"), "") for t in texts if t and t.strip()]


def stored(prompt_set: list[Prompt]) -> str:
    """Real-text prompts as JSON lines (prompt, reference, header), for a sweep to keep."""
    return "".join(json.dumps({"prompt": p.text, "reference": p.reference,
                               "header": p.header}) + "\n" for p in prompt_set)


def read_stored(text: str) -> list[Prompt]:
    """Prompts written by `stored` (instructions parsed again from the header)."""
    out = []
    for line in text.splitlines():
        if line.strip():
            row = json.loads(line)
            header = row.get("header", "")
            instructions = instruct.parse(row["prompt"] + row["reference"])[0] \
                if header else None
            out.append(Prompt(row["prompt"], row["reference"], None, header, instructions))
    return out
