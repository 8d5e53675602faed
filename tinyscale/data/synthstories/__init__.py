"""SynthStories, the built-in corpus: a seeded generator of TinyStories-like stories
that owns its grammar, so any text can be validated against it.

    lexicon.py   the child-level vocabulary (and the richness knob's subsets)
    grammar.py   sentence patterns of each plot stage
    text.py      tokens and sentences, shared by the generator and the validator
    generate.py  story(index, seed, split): a pure function of its arguments
    validate.py  which sentences the grammar accepts; names, pronouns and objects
    corrupt.py   corruptions of a story or a continuation: the metrics' negative controls
"""

from tinyscale.data.synthstories.generate import SPLITS, Story, stories, story

__all__ = ["SPLITS", "Story", "stories", "story"]
