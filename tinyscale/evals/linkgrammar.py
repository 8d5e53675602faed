"""Grammar of real English: does Link Grammar parse a sentence with no null links?

Uses Debian's `python3-link-grammar` and `link-grammar-dictionaries-en` (scripts/setup.sh
installs them). Inside a virtual environment the bindings are reached by adding
Debian's dist-packages folder to the path for this one import. `linkage_limit` stays
at 100: lower values give false negatives (measured).
"""

from __future__ import annotations

import functools
import importlib
import sys

from tinyscale.evals import MissingOptional

INSTALL = "apt-get install python3-link-grammar link-grammar-dictionaries-en"
_DEBIAN = "/usr/lib/python3/dist-packages"


def _module():
    try:
        return importlib.import_module("linkgrammar")
    except ImportError:
        pass
    sys.path.append(_DEBIAN)
    try:
        return importlib.import_module("linkgrammar")
    except ImportError:
        raise MissingOptional(
            f"Link Grammar is not installed (real-English grammar is skipped): {INSTALL}") \
            from None
    finally:
        sys.path.remove(_DEBIAN)


class LinkGrammar:
    def __init__(self):
        lg = _module()
        self._lg = lg
        self.dictionary = lg.Dictionary("en")
        self.options = lg.ParseOptions(linkage_limit=100, min_null_count=0, max_null_count=0,
                                       verbosity=0)
        self.lenient = lg.ParseOptions(linkage_limit=100, min_null_count=0,
                                       max_null_count=250, verbosity=0)

    @functools.lru_cache(maxsize=100_000)  # noqa: B019 - one instance per process
    def parses(self, sentence: str) -> bool:
        """True if the whole sentence has a linkage with no null links."""
        linkages = self._lg.Sentence(sentence, self.dictionary, self.options).parse()
        return next(iter(linkages), None) is not None

    @functools.lru_cache(maxsize=100_000)  # noqa: B019
    def linked_share(self, sentence: str) -> float:
        """Share of words Link Grammar links in its best parse (1 - null links / words):
        the finer-grained variant of `parses`."""
        parsed = self._lg.Sentence(sentence, self.dictionary, self.lenient)
        parsed.parse()
        return 1.0 - parsed.null_count() / max(1, len(sentence.split()))
