"""(docstring summary -> source) pairs from the installed Python stdlib, as a TFDS builder.

The corpus is harvested with ``inspect`` from the interpreter that prepares it, so it needs no
download; a WordPiece tokenizer trained on its train split is saved next to it.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib
import inspect
import io
import json
import linecache
import os
import pkgutil
import re
import subprocess
import sys
import sysconfig
import textwrap
import types
import warnings
from collections.abc import Sequence
from pathlib import Path

import tensorflow_datasets as tfds
from etils import epath

TOKENIZER_FILENAME = "tokenizer.json"
TEST_FRACTION = 0.2
VOCAB_SIZE = 8000
MIN_QUERY_WORDS = 2
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# Top-level modules that are not harvested: import side effects (antigravity opens a browser,
# this prints, rlcompleter rebinds readline's completer, lib2to3 writes grammar caches), GUI
# toolkits, test suites and bundled data, and distutils (setuptools may swap in its own copy).
EXCLUDED_MODULES = frozenset(
    {
        "antigravity",
        "distutils",
        "ensurepip",
        "idlelib",
        "lib2to3",
        "pydoc_data",
        "readline",
        "rlcompleter",
        "test",
        "this",
        "tkinter",
        "turtle",
        "turtledemo",
    }
)
# Submodule names never walked into (test suites inside packages such as unittest or ctypes).
EXCLUDED_SUBMODULES = frozenset({"test", "tests", "idle_test"})


DESCRIPTION = f"""\
A text-to-code retrieval corpus built offline from the Python standard library installed with
the interpreter that prepares it (here {sys.implementation.name} {sys.version.split()[0]}; the
metadata records `python_version`, and the dataset is reproducible for a given Python
installation), in the spirit of CodeSearchNet (Husain et al., 2019).

Harvest: every public top-level module of `sys.stdlib_module_names` (name not starting with "_")
except {", ".join(sorted(EXCLUDED_MODULES))}, and recursively every public submodule of a package
(skipping submodules named {", ".join(sorted(EXCLUDED_SUBMODULES))}), imported with warnings
suppressed; modules that fail to import, or whose file lies outside the standard-library
directory, are skipped. From each module M: the public functions and the public functions,
staticmethods and classmethods defined in the body of its public classes, whose `__module__` is M
and whose `__qualname__` matches where they were found (so re-exports, aliases and inherited
methods are not counted), that have their own non-empty docstring and retrievable pure-Python
source (from the module's file when the module is frozen).

Features (all text): `query`, the first paragraph of `inspect.getdoc`, whitespace-collapsed
(at least {MIN_QUERY_WORDS} words); `code`, `inspect.getsource` dedented (`textwrap.dedent`, or
the `def` line's indentation removed from the lines that start with it when a string literal
is indented less) and without the docstring statement, which the query comes from (as
CodeSearchNet separates them; functions with nothing else in their body are not kept);
`module`, the top-level module name; `name`, the qualified name
`<defining module>.<qualname>`, e.g. `json.decoder.JSONDecoder.decode`.

Deduplication and order: examples are sorted by `name`; an example whose code equals an earlier
one's after collapsing whitespace is dropped. Split by top-level module: `test` when the first 8
bytes of sha256(module name, utf-8), read as a big-endian integer, are below
{TEST_FRACTION} * 2**64, else `train`, so no module is in both splits. Examples within a split are
stored in name order.

A BERT-style WordPiece tokenizer (vocabulary {VOCAB_SIZE}) trained on the train split's queries
and code is saved next to the data as `{TOKENIZER_FILENAME}`
(`jaxemb.data.python_code_search_tokenizer`).
"""

CITATION = r"""@article{husain2019codesearchnet,
  author  = {Husain, Hamel and Wu, Ho-Hsiang and Gazit, Tiferet and Allamanis, Miltiadis and
             Brockschmidt, Marc},
  title   = {{CodeSearchNet} Challenge: Evaluating the State of Semantic Code Search},
  journal = {arXiv preprint arXiv:1909.09436},
  year    = {2019}
}"""


# ----------------------------------------------------------------------------- harvest


def harvestable_modules() -> tuple[str, ...]:
    """The top-level standard-library module names that are harvested, sorted."""
    return tuple(
        sorted(
            name
            for name in sys.stdlib_module_names
            if not name.startswith("_") and name not in EXCLUDED_MODULES
        )
    )


def _stdlib_dir() -> str:
    return os.path.realpath(sysconfig.get_paths()["stdlib"])


def _import_quietly(name: str) -> types.ModuleType | None:
    """Imports a module with warnings and output suppressed; ``None`` when it cannot be imported."""
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except (Exception, SystemExit):  # noqa: BLE001 - platform modules fail in many ways
            return None


def _walk(
    top: str, root: str, *, skip: frozenset[str] = EXCLUDED_SUBMODULES, builtin: bool = False
) -> list[types.ModuleType]:
    """``top`` and its public submodules that import and whose file lies in the directory
    ``root`` (with ``builtin``, also modules compiled into the interpreter, which have no file);
    a submodule whose name or dotted name is in ``skip`` is not walked into."""
    found, stack = [], [top]
    while stack:
        name = stack.pop()
        module = _import_quietly(name)
        path = getattr(module, "__file__", None)
        if path is None and builtin and module is not None:
            if name not in sys.builtin_module_names:
                continue
        elif not path or not os.path.realpath(path).startswith(root + os.sep):
            continue
        found.append(module)
        for info in pkgutil.iter_modules(getattr(module, "__path__", None) or []):
            full = f"{name}.{info.name}"
            if not info.name.startswith("_") and info.name not in skip and full not in skip:
                stack.append(full)
    return found


def docstring_summary(doc: str) -> str:
    """The first paragraph of a cleaned docstring, whitespace runs collapsed to one space."""
    lines = []
    for line in doc.strip().splitlines():
        if not line.strip():
            break
        lines.append(line)
    return " ".join(" ".join(lines).split())


def _source(func: types.FunctionType, stdlib: str) -> str | None:
    """``inspect.getsource(func)``; for a frozen module, the same block read from its file
    (what ``inspect.getsource`` gives under ``python -X frozen_modules=off``)."""
    try:
        return inspect.getsource(func)
    except (OSError, TypeError):
        pass
    code = inspect.unwrap(func).__code__
    frozen = re.fullmatch(r"<frozen ([\w.]+)>", code.co_filename)
    path = getattr(sys.modules.get(frozen.group(1)), "__file__", None) if frozen else None
    if not path or not os.path.realpath(path).startswith(stdlib + os.sep):
        return None
    lines = linecache.getlines(path)
    if len(lines) < code.co_firstlineno:
        return None
    try:
        return "".join(inspect.getblock(lines[code.co_firstlineno - 1 :]))
    except Exception:  # noqa: BLE001 - a file that does not tokenize has no usable source
        return None


def dedent_source(source: str) -> str:
    """``textwrap.dedent``; if a string literal is indented less than the ``def`` line (so the
    first line keeps its indentation), that line's indentation is removed from every line that
    starts with it instead, which keeps the block compilable."""
    dedented = textwrap.dedent(source)
    first = dedented.split("\n", 1)[0]
    indent = first[: len(first) - len(first.lstrip())]
    if not indent:
        return dedented
    return "".join(
        line[len(indent) :] if line.startswith(indent) else line
        for line in dedented.splitlines(keepends=True)
    )


def strip_docstring(code: str) -> str | None:
    r"""``code`` (a dedented ``def`` block) without its docstring statement, as CodeSearchNet
    separates the two; ``None`` when nothing but the docstring (or ``pass`` / ``...``) would be
    left in the body, or when the block does not parse.

    Examples:
      >>> from jaxemb.data._code_search import strip_docstring
      >>> print(strip_docstring("def f(x):\n    'Twice x.'\n    return 2 * x\n"), end="")
      def f(x):
          return 2 * x
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    funcs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not funcs:
        return None
    body = funcs[0].body
    first = body[0]
    if not (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        return code
    rest = body[1:]
    if not rest or all(
        isinstance(n, ast.Pass)
        or (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and n.value.value is ...)
        for n in rest
    ):
        return None
    lines = code.splitlines(keepends=True)
    start, end = first.lineno - 1, first.end_lineno  # the docstring's own lines
    if lines[start][: first.col_offset].strip() or lines[end - 1][first.end_col_offset :].strip():
        return None  # shares a line with other code: no clean cut
    return "".join(lines[:start] + lines[end:])


def _example(func, qualname: str, module: types.ModuleType, stdlib: str):
    if not inspect.isfunction(func) or func.__module__ != module.__name__:
        return None
    if getattr(func, "__qualname__", None) != qualname:
        return None
    own_doc = func.__doc__
    if not isinstance(own_doc, str) or not own_doc.strip():
        return None
    query = docstring_summary(inspect.getdoc(func) or "")
    if len(query.split()) < MIN_QUERY_WORDS:
        return None
    source = _source(func, stdlib)
    if not source or not source.strip():
        return None
    code = strip_docstring(dedent_source(source))
    if code is None:
        return None
    example = {
        "query": query,
        "code": code,
        "module": module.__name__.split(".")[0],
        "name": f"{module.__name__}.{qualname}",
    }
    try:
        for value in example.values():
            value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return example


def _module_examples(module: types.ModuleType, stdlib: str) -> list[dict[str, str]]:
    examples = []
    for attr, value in sorted(vars(module).items()):
        if attr.startswith("_"):
            continue
        if inspect.isclass(value):
            if value.__module__ != module.__name__ or value.__qualname__ != attr:
                continue
            for method_name, method in sorted(vars(value).items()):
                if method_name.startswith("_"):
                    continue
                if isinstance(method, (staticmethod, classmethod)):
                    method = method.__func__
                examples.append(_example(method, f"{attr}.{method_name}", module, stdlib))
        else:
            examples.append(_example(value, attr, module, stdlib))
    return [e for e in examples if e is not None]


def code_search_split(module: str) -> str:
    """``'test'`` or ``'train'``: the split of every example of the top-level module ``module``."""
    bucket = int.from_bytes(hashlib.sha256(module.encode("utf-8")).digest()[:8], "big")
    return "test" if bucket < TEST_FRACTION * 2**64 else "train"


def harvest_python_code_search(modules: Sequence[str] | None = None) -> list[dict[str, str]]:
    """Harvests (docstring summary, source) pairs from the installed Python standard library.

    This is the corpus of the ``python_code_search`` dataset, built in this process by importing
    the modules (warnings and output suppressed). The rules (which modules, functions and methods,
    the summary, deduplication) are in ``PythonCodeSearch``'s description; the result depends only
    on the Python installation.

    Args:
      modules: top-level standard-library module names to harvest (with their public
        submodules), e.g. ``["json", "textwrap"]``; ``None`` harvests every module in
        ``harvestable_modules()`` (about 2 s).

    Returns:
      A list of dicts with string values ``query``, ``code``, ``module`` (top-level module) and
      ``name`` (``<defining module>.<qualname>``), sorted by ``name``, without two examples whose
      code is equal up to whitespace.

    Raises:
      ValueError: if ``modules`` is not a sequence of harvestable module names.

    Examples:
      >>> from jaxemb import data
      >>> pairs = data.harvest_python_code_search(["textwrap"])
      >>> [p["name"] for p in pairs][:3]
      ['textwrap.TextWrapper.fill', 'textwrap.TextWrapper.wrap', 'textwrap.dedent']
      >>> pairs[2]["query"]
      'Remove any common leading whitespace from every line in `text`.'
      >>> pairs[2]["code"].splitlines()[0]
      'def dedent(text):'

    References:
      Husain et al. (2019), "CodeSearchNet Challenge: Evaluating the State of Semantic Code
      Search" (docstring -> function pairs, with the docstring's first paragraph as the query);
      the sources come from ``inspect.getsource`` and the summaries from ``inspect.getdoc``.
    """
    allowed = harvestable_modules()
    if modules is None:
        modules = allowed
    elif isinstance(modules, str) or not isinstance(modules, Sequence) or not modules:
        raise ValueError(
            f"modules must be a non-empty sequence of standard-library module names such as "
            f"['json', 'textwrap'], or None for all; got {modules!r}"
        )
    unknown = [m for m in modules if m not in allowed]
    if unknown:
        raise ValueError(
            f"modules must be top-level standard-library modules that are harvested (public, "
            f"not in {sorted(EXCLUDED_MODULES)}); got {unknown!r}"
        )
    stdlib = _stdlib_dir()
    examples = []
    for top in sorted(set(modules)):
        for module in _walk(top, stdlib):
            examples.extend(_module_examples(module, stdlib))
    examples.sort(key=lambda e: e["name"])
    seen, unique = set(), []
    for example in examples:
        key = " ".join(example["code"].split())
        if key not in seen:
            seen.add(key)
            unique.append(example)
    return unique


def _harvest_in_fresh_interpreter(
    harvest: str = "harvest_python_code_search", *, env: dict[str, str] | None = None, **kwargs
) -> list[dict[str, str]]:
    """``jaxemb.data.<harvest>(**kwargs)`` run in a new interpreter of this Python installation.

    The harvest reads the modules' live attributes, so in the preparing process it would depend
    on what that process imported or patched (a command line that replaced
    ``warnings.formatwarning`` drops ``warnings.formatwarning`` from the corpus). A fresh
    interpreter sees the modules as installed. ``kwargs`` travel as JSON, ``env`` is added to
    this process's environment, and what the imports write to the file descriptor of stdout
    goes to stderr, so only the result comes back on stdout.
    """
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, **(env or {}), "PYTHONPATH": path}
    script = (
        "import json, os, sys\n"
        f"from jaxemb.data import {harvest} as harvest\n"
        "out = os.fdopen(os.dup(1), 'w')\n"
        "os.dup2(2, 1)\n"
        "json.dump(harvest(**json.loads(sys.argv[1])), out)\n"
        "out.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(kwargs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"harvesting {harvest.removeprefix('harvest_')} in a fresh interpreter "
            f"({sys.executable}) failed with exit code {done.returncode}: "
            f"{done.stderr.strip()[-2000:]}"
        )
    return json.loads(done.stdout)


# ----------------------------------------------------------------------------- tokenizer


def _untrained_tokenizer():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def train_wordpiece(texts: Sequence[str], *, vocab_size: int = VOCAB_SIZE):
    """Trains a BERT-style (uncased) WordPiece tokenizer on ``texts``, deterministically.

    The pipeline is ``tokenizers``' ``BertWordPieceTokenizer``: ``BertNormalizer`` (lowercase),
    ``BertPreTokenizer``, ``WordPiece`` with ``##`` continuations and its decoder, special tokens
    ``[PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4`` and the post-processor ``[CLS] $A [SEP]``
    (pairs ``[CLS] $A [SEP] $B [SEP]`` with type ids 0 / 1). It is trained by
    ``WordPieceTrainer`` with that class's defaults (``min_frequency=2``,
    ``limit_alphabet=1000``). The trainer numbers the ``##x`` continuation tokens in hash-map
    order, and those numbers break ties between equally frequent merges, so two runs can give
    different vocabularies (huggingface/tokenizers issue 1794); here every ``##x`` that can occur
    is registered first, in sorted order, so the same texts always give the same tokenizer.

    Args:
      texts: the training texts, a non-empty sequence of strings.
      vocab_size: the size of the vocabulary, an integer >= 64.

    Returns:
      A ``tokenizers.Tokenizer``.

    Raises:
      ValueError: for empty or non-string ``texts`` or an invalid ``vocab_size``.

    Examples:
      >>> from jaxemb.data._code_search import train_wordpiece
      >>> tok = train_wordpiece(["def parse(text): return text.split()"] * 4, vocab_size=64)
      >>> tok.encode("parse texts, then split").tokens  # ',' and 'h' were never seen
      ['[CLS]', 'parse', 'text', '##s', '[UNK]', '[UNK]', 'split', '[SEP]']
      >>> [tok.id_to_token(i) for i in range(5)]
      ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']

    References:
      Devlin et al. (2019), "BERT" and Wu et al. (2016), "Google's Neural Machine Translation
      System" (WordPiece); reference implementation ``tokenizers.BertWordPieceTokenizer``.
    """
    from jaxemb._validate import check_int

    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
        raise ValueError(f"texts must be a non-empty sequence of strings; got {type(texts)}")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(
            f"texts must hold only strings; got {type(texts[bad[0]]).__name__} at index {bad[0]}"
        )
    check_int(vocab_size, "vocab_size", minimum=64)
    from tokenizers import Tokenizer, models, processors, trainers

    tokenizer = _untrained_tokenizer()
    continuing = set()
    for text in texts:
        words = tokenizer.pre_tokenizer.pre_tokenize_str(tokenizer.normalizer.normalize_str(text))
        for word, _ in words:
            continuing.update(word[1:])
    seeded = [f"##{c}" for c in sorted(continuing)]
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        limit_alphabet=1000,
        special_tokens=list(SPECIAL_TOKENS) + seeded,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer, length=len(texts))
    # Rebuild from the vocabulary so that only the five real special tokens are special.
    trained: Tokenizer = _untrained_tokenizer()
    trained.model = models.WordPiece(vocab=tokenizer.get_vocab(), unk_token="[UNK]")
    trained.add_special_tokens(list(SPECIAL_TOKENS))
    cls, sep = trained.token_to_id("[CLS]"), trained.token_to_id("[SEP]")
    trained.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return trained


def python_code_search_tokenizer(data_dir=None):
    """Returns the WordPiece tokenizer trained on ``python_code_search``'s train split.

    It is ``tokenizer.json`` saved next to the prepared dataset (prepared first if needed, about
    6 s), so every process sees the same vocabulary. Its ``vocab_size`` is 8000; see
    ``train_wordpiece`` for the pipeline (BERT uncased: ``[PAD]=0``, ``[CLS] ... [SEP]``).

    Args:
      data_dir: the TFDS data directory; ``None`` means ``default_data_dir()``.

    Returns:
      A ``tokenizers.Tokenizer``.

    Raises:
      ValueError: for an unusable ``data_dir`` or a prepared directory without the tokenizer.

    Examples:
      >>> from jaxemb import data
      >>> tok = data.python_code_search_tokenizer()  # prepares the dataset on first use
      >>> tok.get_vocab_size() <= 8000, tok.token_to_id("[PAD]"), tok.token_to_id("[CLS]")
      (True, 0, 2)
      >>> tok.encode("Return the sum of a and b.").tokens
      ['[CLS]', 'return', 'the', 'sum', 'of', 'a', 'and', 'b', '.', '[SEP]']

    References:
      Devlin et al. (2019), "BERT"; reference implementation ``tokenizers.BertWordPieceTokenizer``.
    """
    from tokenizers import Tokenizer

    from jaxemb.data import _sources

    builder = _sources.embedded_builder("python_code_search", data_dir=data_dir)
    path = builder.data_path / TOKENIZER_FILENAME
    if not path.exists():
        raise ValueError(
            f"The prepared python_code_search dataset in {builder.data_path} has no "
            f"{TOKENIZER_FILENAME}; the directory is damaged or was prepared by other code. "
            f"Delete that directory and call again to prepare it afresh."
        )
    return Tokenizer.from_str(path.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- builder


class PythonCodeSearch(tfds.core.GeneratorBasedBuilder):
    """Docstring summary -> source pairs from the installed Python standard library (no download).

    The corpus depends on the Python installation that prepares it: the description names the
    version, and the prepared dataset's metadata (``builder.info.metadata``) records
    ``python_version``, the example counts and the modules of each split. Read it with
    ``jaxemb.data.data_source("python_code_search", "train")``; text features arrive as bytes.

    Examples:
      >>> from jaxemb import data
      >>> import tempfile
      >>> builder = data.PythonCodeSearch(data_dir=tempfile.mkdtemp(), file_format="array_record")
      >>> sorted(builder.info.features)
      ['code', 'module', 'name', 'query']
      >>> builder.info.supervised_keys
      ('query', 'code')

    References:
      Husain et al. (2019), "CodeSearchNet Challenge" (the task and pair construction).
    """

    VERSION = tfds.core.Version("2.0.0")
    # TFDS derives code_path from the package with `importlib_resources`, which is not a
    # dependency of TFDS and may be missing; pointing it at this file avoids that import.
    code_path = epath.Path(__file__)
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "2.0.0": "code without its docstring (the query came from it); functions whose body is "
        "only a docstring (and pass / ...) are dropped.",
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "query": tfds.features.Text(),
                    "code": tfds.features.Text(),
                    "module": tfds.features.Text(),
                    "name": tfds.features.Text(),
                }
            ),
            supervised_keys=("query", "code"),
            disable_shuffling=True,
            homepage="https://docs.python.org/3/library/inspect.html",
            citation=CITATION,
            license="PSF-2.0 (the Python standard library's sources and docstrings)",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # The corpus comes from this interpreter's standard library.
        examples = _harvest_in_fresh_interpreter()
        splits = {"train": [], "test": []}
        for example in examples:
            splits[code_search_split(example["module"])].append(example)
        texts = [t for e in splits["train"] for t in (e["query"], e["code"])]
        tokenizer = train_wordpiece(texts, vocab_size=VOCAB_SIZE)
        # data_dir is the temporary preparation directory here; TFDS renames it into place.
        with open(f"{self.data_dir}/{TOKENIZER_FILENAME}", "w", encoding="utf-8") as f:
            f.write(tokenizer.to_str())
        self.info.metadata.update(
            {
                "python_version": sys.version,
                "python_implementation": sys.implementation.name,
                "num_examples": {name: len(split) for name, split in splits.items()},
                "test_modules": sorted({e["module"] for e in splits["test"]}),
                "train_modules": sorted({e["module"] for e in splits["train"]}),
            }
        )
        return {name: self._generate_examples(split) for name, split in splits.items()}

    def _generate_examples(self, examples):
        for example in examples:
            yield example["name"], example
