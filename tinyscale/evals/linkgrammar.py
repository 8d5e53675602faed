"""Grammar of real English: does Link Grammar parse a sentence with no null links?

Calls the Link Grammar C library (`liblink-grammar5`, with `link-grammar-dictionaries-en`;
scripts/setup.sh and the Cloud TPU bootstrap install them through apt) with ctypes, so
any Python reaches it: Debian's own SWIG bindings (`python3-link-grammar`) are built for
the system Python only, and a Cloud TPU VM's system Python (3.10) is not the one
tinyscale runs on. The options are those of the SWIG `ParseOptions` defaults, so both
give the same answers (tests/test_evals.py checks them against each other).
`linkage_limit` stays at 100: lower values give false negatives (measured).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

from tinyscale.evals import MissingOptional

INSTALL = "apt-get install liblink-grammar5 link-grammar-dictionaries-en"
_WARN = 3  # lg_error_severity: lg_Fatal=1, lg_Error, lg_Warn, lg_Info, lg_Debug, ...


class _ErrInfo(ctypes.Structure):  # lg_errinfo of link-includes.h (5.x)
    _fields_ = [("severity", ctypes.c_int),
                ("severity_label", ctypes.c_char_p), ("text", ctypes.c_char_p)]


@ctypes.CFUNCTYPE(None, ctypes.POINTER(_ErrInfo), ctypes.c_void_p)
def _on_message(info, _):
    """Warnings and errors to stderr; the library's info and debug chatter (e.g. about
    the locale on every dictionary it opens) nowhere."""
    if info.contents.severity <= _WARN:
        print(f"link-grammar: {(info.contents.text or b'').decode(errors='replace').strip()}",
              file=sys.stderr)


@functools.cache
def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("link-grammar") or "liblink-grammar.so.5"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        raise MissingOptional(
            f"Link Grammar is not installed (real-English grammar is skipped): {INSTALL}") \
            from None
    p, i = ctypes.c_void_p, ctypes.c_int
    for fn, args, res in (
            ("dictionary_create_lang", [ctypes.c_char_p], p),
            ("parse_options_create", [], p),
            ("sentence_create", [ctypes.c_char_p, p], p),
            ("sentence_parse", [p, p], i),
            ("sentence_num_valid_linkages", [p], i),
            ("sentence_null_count", [p], i),
            ("sentence_delete", [p], None),
            ("parse_options_set_max_parse_time", [p, i], None),
            ("parse_options_set_test", [p, ctypes.c_char_p], None),
            ("parse_options_set_debug", [p, ctypes.c_char_p], None),
            ("parse_options_set_dialect", [p, ctypes.c_char_p], None)):
        getattr(lib, fn).argtypes, getattr(lib, fn).restype = args, res
    lib.lg_error_set_handler.argtypes = [type(_on_message), ctypes.c_void_p]
    lib.lg_error_set_handler.restype = ctypes.c_void_p
    lib.lg_error_set_handler(_on_message, None)
    return lib


def _options(lib, max_null_count: int, max_parse_time: int = -1):
    """Parse options as the SWIG bindings' ParseOptions(linkage_limit=100, ...) sets them;
    `max_parse_time` in seconds (-1: none)."""
    o = lib.parse_options_create()
    for knob, value in (("verbosity", 0), ("linkage_limit", 100), ("min_null_count", 0),
                        ("max_null_count", max_null_count), ("islands_ok", 0),
                        ("short_length", 16), ("all_short_connectors", 0),
                        ("display_morphology", 1), ("spell_guess", 0), ("use_sat_parser", 0),
                        ("repeatable_rand", 1)):
        fn = getattr(lib, f"parse_options_set_{knob}")
        fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_int], None
        fn(o, value)
    lib.parse_options_set_max_parse_time(o, max_parse_time)
    for knob in ("test", "debug", "dialect"):
        getattr(lib, f"parse_options_set_{knob}")(o, b"")
    return o


LENIENT_SECONDS = 2  # the most a linked_share parse may take


class LinkGrammar:
    def __init__(self):
        lib = self._lib = _library()
        self.dictionary = lib.dictionary_create_lang(b"en")
        if not self.dictionary:
            raise MissingOptional("Link Grammar's English dictionary is missing (real-English "
                                  f"grammar is skipped): {INSTALL}")
        # the search for the fewest null links can take minutes on a long word salad (a
        # small model's, or a shuffled sentence): past LENIENT_SECONDS Link Grammar gives
        # its best parse so far, which has at least as many null links as the best one
        self.options = _options(lib, 0)
        self.lenient = _options(lib, 250, LENIENT_SECONDS)

    def _parse(self, sentence: str, options, read):
        lib = self._lib
        s = lib.sentence_create(sentence.encode(), self.dictionary)
        try:
            lib.sentence_parse(s, options)
            return read(s)
        finally:
            lib.sentence_delete(s)

    @functools.lru_cache(maxsize=100_000)  # noqa: B019 - one instance per process
    def parses(self, sentence: str) -> bool:
        """True if the whole sentence has a linkage with no null links."""
        return self._parse(sentence, self.options,
                           lambda s: self._lib.sentence_num_valid_linkages(s) > 0)

    @functools.lru_cache(maxsize=100_000)  # noqa: B019
    def linked_share(self, sentence: str) -> float:
        """Share of words Link Grammar links in its best parse (1 - null links / words):
        the finer-grained variant of `parses`."""
        nulls = self._parse(sentence, self.lenient, self._lib.sentence_null_count)
        return 1.0 - nulls / max(1, len(sentence.split()))
