"""Docstring paragraphs of the Python packages installed with jaxemb, as a TFDS builder.

The corpus is harvested with ``inspect`` from the installed packages (numpy, scipy, jax, flax,
optax, matplotlib and the standard library), so it needs no download: many short English texts
from distinguishable topics, for sentence-embedding and sparse-autoencoder experiments.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import os
import re
import sys
import types
import warnings
from collections.abc import Callable, Sequence

import tensorflow_datasets as tfds
from etils import epath

from jaxemb.data._code_search import (
    EXCLUDED_MODULES,
    EXCLUDED_SUBMODULES,
    _harvest_in_fresh_interpreter,
    _import_quietly,
    _stdlib_dir,
    _walk,
    harvestable_modules,
)

# The third-party packages, in the order of the description; "stdlib" is the standard library.
THIRD_PARTY_PACKAGES = ("numpy", "scipy", "jax", "flax", "optax", "matplotlib")
PACKAGES = (*THIRD_PARTY_PACKAGES, "stdlib")
MIN_WORDS = 8
MAX_WORDS = 120

# matplotlib.backends modules that import a GUI toolkit (or a notebook / web server).
GUI_BACKENDS = (
    "backend_gtk3",
    "backend_gtk3agg",
    "backend_gtk3cairo",
    "backend_gtk4",
    "backend_gtk4agg",
    "backend_gtk4cairo",
    "backend_macosx",
    "backend_nbagg",
    "backend_qt",
    "backend_qt5",
    "backend_qt5agg",
    "backend_qt5cairo",
    "backend_qtagg",
    "backend_qtcairo",
    "backend_tkagg",
    "backend_tkcairo",
    "backend_webagg",
    "backend_webagg_core",
    "backend_wx",
    "backend_wxagg",
    "backend_wxcairo",
    "qt_compat",
    "qt_editor",
    "web_backend",
)
# Submodules not walked into: test suites and test helpers (by name, at any depth), and (by
# dotted name) modules with import side effects or optional dependencies: numpy.distutils
# patches distutils, GUI backends import their toolkits, Sphinx extensions need Sphinx,
# flax.experimental is a deprecated alias that logs, and jax2tf, flax's tensorboard writer,
# jax.tools.jax_to_ir and jax.collect_profile want TensorFlow or profiler plugins.
OTHER_EXCLUDED = frozenset(
    {
        "numpy.distutils",
        "jax.collect_profile",
        "jax.experimental.jax2tf",
        "jax.tools.jax_to_ir",
        "flax.experimental",
        "flax.metrics.tensorboard",
        "matplotlib.sphinxext",
    }
)
EXCLUDED_NAMES = EXCLUDED_SUBMODULES | {"testing", "conftest", "benchmarks"}
EXCLUDED_PACKAGE_MODULES = (
    EXCLUDED_NAMES | OTHER_EXCLUDED | {f"matplotlib.backends.{name}" for name in GUI_BACKENDS}
)

# The harvesting interpreter's environment: matplotlib without a GUI, JAX without accelerators,
# and a fixed string-hash seed so that a docstring built from a set is the same in every run.
HARVEST_ENV = {"MPLBACKEND": "Agg", "JAX_PLATFORMS": "cpu", "PYTHONHASHSEED": "0"}

# Docstring sections that hold lists, code or citations rather than prose: numpydoc titles
# (underlined) and Google-style headers ("Args:").
DROPPED_SECTIONS = frozenset(
    {
        "args",
        "arguments",
        "attributes",
        "example",
        "examples",
        "keyword args",
        "keyword arguments",
        "kwargs",
        "methods",
        "other parameters",
        "parameters",
        "params",
        "raises",
        "receives",
        "reference",
        "references",
        "return",
        "returns",
        "see also",
        "todo",
        "usage",
        "warns",
        "yield",
        "yields",
    }
)
# Google-style headers whose (indented) body is prose that is kept.
PROSE_SECTIONS = frozenset({"note", "notes", "warning", "warnings"})

_UNDERLINE = re.compile(r"[ \t]*([-=~^*+#])\1{2,}[ \t]*")
_GOOGLE_HEADER = re.compile(r"([A-Z][A-Za-z ]*):[ \t]*")
_TABLE_RULE = re.compile(r"[ \t]*[-=+|]{3,}[-=+| \t]*")
_BULLET = re.compile(r"([-*+\u2022]|\d+[.)]|#\.)\s")
_DIRECTIVE = re.compile(r"\.\.(\s|$)")
_SIGNATURE = re.compile(r"[\w.]+\(.*\)(\s*->\s*\S.*)?")


DESCRIPTION = f"""\
Paragraphs of the docstrings of the Python packages installed with jaxemb: {", ".join(PACKAGES)}
(the standard library of the interpreter that prepares it). The corpus needs no download and is
reproducible for a given installation; the metadata records `versions` (the packages' and
Python's) and `num_texts` per package. Config `all` (the default) has every package: about
19,400 texts with numpy 2.4, scipy 1.17, jax 0.10, flax 0.12, optax 0.2, matplotlib 3.11 and
Python 3.11 (about 2,500 from numpy, 4,400 scipy, 2,400 jax, 830 flax, 400 optax, 2,300
matplotlib, 6,600 stdlib; prepared in about 7 s on 2 CPU cores); config `stdlib` has only the
standard library (reproducible for a given Python installation alone). Many short texts from
distinguishable topics, for sentence-embedding sparse-autoencoder experiments in the style of
O'Neill et al. (2024), "Disentangling Dense Embeddings with Sparse Autoencoders".

Harvest, in a fresh interpreter (environment variables {HARVEST_ENV}; warnings suppressed, the
output of imports swallowed): each package and recursively its public submodules (name not
starting with "_") that import and whose file lies in the package's directory, except
submodules named {", ".join(sorted(EXCLUDED_NAMES))}, the modules
{", ".join(sorted(OTHER_EXCLUDED))}, and matplotlib's GUI backends (matplotlib.backends.X for X
in {", ".join(GUI_BACKENDS)}). The standard library is every public top-level module of
`sys.stdlib_module_names` except {", ".join(sorted(EXCLUDED_MODULES))}; each is walked the same
way (file in the standard-library directory, or built into the interpreter).
From each module M: its docstring, and each public attribute that is a class or a named callable
whose `__module__` belongs to the package (for the standard library, whose top-level module is a
standard-library module) and whose `__qualname__` (or `__name__`) is the attribute's name,
harvested where it is defined: in M when `__module__` is M; when `__module__` is private (a
component starts with "_"), in the public module that exports it (listed in its `__all__`, if it
has one) sharing the most leading name components with `__module__`, then the shortest, then the
first by name. Of a class, also the public routines of its own namespace (staticmethods and
classmethods unwrapped) whose `__qualname__` is `<class>.<name>`. Only an object's own non-empty
`__doc__` counts (nothing inherited).

Paragraphs: `inspect.getdoc` split on blank lines; dropped are numpydoc sections (a title over
an underline of three or more of one of -=~^*+#), up to the next title, and Google-style
sections (a capitalised "Title:" line, first in its paragraph or over an indented line), up to
the next unindented paragraph, titled {", ".join(sorted(DROPPED_SECTIONS))}; Google-style
sections titled {", ".join(sorted(PROSE_SECTIONS))} keep their body, dedented. Also dropped:
paragraphs with a doctest line (">>>"); reST directives, comments and footnotes (a line
starting ".. ": the paragraph from there on); indented
paragraphs (code, quotes, definition bodies); definition lists (an unindented first line, not a
bullet, over an indented one); tables and rules (a line of three or more of "-=+|" and spaces);
call signatures ("name(...)", "name(...) -> type"). A literal-block marker "::" at the end
becomes ":" (or goes, with the space before it); the paragraphs after it or after a directive
that are indented more than it are dropped.
Whitespace runs are collapsed to one space; paragraphs of fewer than {MIN_WORDS} or more than
{MAX_WORDS} words are dropped.

Features (all text): `text`; `package`, the package name ("stdlib" for the standard library);
`module`, the module the object was harvested in, e.g. `numpy.linalg`; `object`, its qualified
name, e.g. `numpy.linalg.norm` (the module name for a module docstring). One split, `train`.
Order: by module name, then the object's qualified name within it (the module docstring first),
then paragraph position; a text equal to an earlier one is dropped.
"""

CITATION = r"""@article{oneill2024disentangling,
  author  = {O'Neill, Charles and Ye, Christine and Iyer, Kartheik and Wu, John F.},
  title   = {Disentangling Dense Embeddings with Sparse Autoencoders},
  journal = {arXiv preprint arXiv:2408.00657},
  year    = {2024}
}"""


# ----------------------------------------------------------------------------- paragraphs


def _indented(line: str) -> bool:
    return line[:1] in (" ", "\t")


def docstring_paragraphs(doc: str) -> list[str]:
    """The prose paragraphs of a docstring, whitespace-collapsed, in order.

    The rules are those of the ``python_docs`` dataset (see ``PythonDocs``'s description): the
    docstring is split on blank lines; parameter, return, example, reference and similar
    sections (numpydoc or Google style), doctests, reST directives, code and other indented
    blocks, definition lists, tables and call signatures are dropped, and so are paragraphs of
    fewer than 8 or more than 120 words.

    Args:
      doc: a docstring, cleaned as ``inspect.getdoc`` returns it (a string).

    Returns:
      The kept paragraphs, each a string with whitespace runs collapsed to one space.

    Raises:
      ValueError: if ``doc`` is not a string.

    Examples:
      >>> from jaxemb.data._python_docs import docstring_paragraphs
      >>> doc = '''Return the norm of a vector, the square root of its dot product with itself.
      ...
      ... Parameters
      ... ----------
      ... x : array_like
      ...     The vector, which is never copied when it is already an array.
      ...
      ... Notes
      ... -----
      ... The result is computed in a way that avoids overflow
      ... for very large entries.
      ...
      ... >>> norm([3, 4])
      ... 5.0
      ... '''
      >>> for paragraph in docstring_paragraphs(doc):
      ...     print(paragraph)
      Return the norm of a vector, the square root of its dot product with itself.
      The result is computed in a way that avoids overflow for very large entries.

    References:
      O'Neill et al. (2024), "Disentangling Dense Embeddings with Sparse Autoencoders" (short
      texts as the units to embed); the section conventions of numpydoc and of the Google Python
      Style Guide; ``inspect.getdoc`` (the cleaning).
    """
    if not isinstance(doc, str):
        raise ValueError(f"doc must be a docstring (a string); got {type(doc).__name__}")
    kept: list[str] = []
    # skip: in a dropped section; google: in a Google-style section; literal: the indentation of
    # the directive or "::" paragraph whose body (paragraphs indented more) is being skipped
    state: dict = {"skip": False, "google": False, "literal": None}
    blocks: list[list[str]] = [[]]
    for line in doc.splitlines():
        if line.strip():
            blocks[-1].append(line.rstrip())
        elif blocks[-1]:
            blocks.append([])
    for lines in blocks:
        # section titles cut the block: numpydoc (a line over an underline) and Google ("Args:"
        # first in the block or over an indented line)
        start, i = 0, 0
        while i < len(lines):
            numpydoc = i + 1 < len(lines) and _numpydoc_title(lines[i], lines[i + 1])
            google = _GOOGLE_HEADER.fullmatch(lines[i])
            if google and i > 0 and not (i + 1 < len(lines) and _indented(lines[i + 1])):
                google = None
            title = " ".join((google.group(1) if google else lines[i]).split()).lower()
            if numpydoc or (google and title in DROPPED_SECTIONS | PROSE_SECTIONS):
                _paragraph(lines[start:i], state, kept, first=start == 0)
                state.update(skip=title in DROPPED_SECTIONS, google=not numpydoc, literal=None)
                i = start = i + (2 if numpydoc else 1)
            else:
                i += 1
        _paragraph(lines[start:], state, kept, first=start == 0)
    return kept


def _numpydoc_title(line: str, next_line: str) -> bool:
    return (
        _UNDERLINE.fullmatch(next_line) is not None
        and not _indented(line)
        and _UNDERLINE.fullmatch(line) is None
        and not line.startswith(">>>")
    )


def _paragraph(lines: list[str], state: dict, kept: list[str], *, first: bool):
    """Appends the text of one block (or of a part after a section title) if it is prose."""
    if not lines:
        return
    indented = all(_indented(line) for line in lines)
    if state["google"] and first and not indented:
        state.update(skip=False, google=False)  # an unindented block ends a Google section
    margin = min(len(line) - len(line.lstrip()) for line in lines)
    if state["literal"] is not None:
        if margin > state["literal"]:
            return  # the body of a directive or of a literal block
        state["literal"] = None
    if state["skip"]:
        return
    if state["google"] and indented:
        lines, indented = [line.strip() for line in lines], False  # a prose section's body
    for i, line in enumerate(lines):
        if _DIRECTIVE.match(line):  # a reST directive, comment, target or footnote
            state["literal"] = margin
            lines = lines[:i]
            break
    if not lines or indented or any(line.lstrip().startswith(">>>") for line in lines):
        return
    if len(lines) > 1 and _indented(lines[1]) and not _indented(lines[0]):
        if _BULLET.match(lines[0]) is None:
            return  # a definition list: "name : type" over its indented description
    if any(_TABLE_RULE.fullmatch(line) for line in lines):
        return
    text = " ".join(" ".join(lines).split())
    if text.endswith("::"):
        state["literal"] = margin
        head = text[:-2]
        text = head.rstrip() if not head or head.endswith(" ") else head + ":"
    if _SIGNATURE.fullmatch(text):
        return
    if MIN_WORDS <= len(text.split()) <= MAX_WORDS:
        kept.append(text)


# ----------------------------------------------------------------------------- harvest


def _check_packages(packages) -> list[str]:
    if packages is None:
        return list(PACKAGES)
    if isinstance(packages, str) or not isinstance(packages, Sequence) or not packages:
        raise ValueError(
            f"packages must be a non-empty sequence of names such as ['numpy', 'stdlib'] or "
            f"['json'], or None for all; got {packages!r}"
        )
    stdlib = set(harvestable_modules())
    unknown = [p for p in packages if not isinstance(p, str) or (p not in {*PACKAGES, *stdlib})]
    if unknown:
        raise ValueError(
            f"packages must hold names of {list(PACKAGES)} or of harvested top-level "
            f"standard-library modules (such as 'json'; not {sorted(EXCLUDED_MODULES)}); got "
            f"{unknown!r}"
        )
    return list(dict.fromkeys(packages))


def _defined_as(value) -> tuple[str | None, str | None]:
    """``(__module__, __qualname__ or __name__)`` of a class or named callable, else Nones."""
    try:
        if not (inspect.isclass(value) or callable(value)) or inspect.ismodule(value):
            return None, None
        module = getattr(value, "__module__", None)
        name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    except Exception:  # noqa: BLE001 - a proxy object may fail on any attribute
        return None, None
    if not isinstance(module, str) or not isinstance(name, str):
        return None, None
    return module, name


def _own_doc(value) -> str | None:
    try:
        doc = value.__doc__
    except Exception:  # noqa: BLE001 - as above
        return None
    if not isinstance(doc, str) or not doc.strip():
        return None
    return inspect.getdoc(value)


def _is_private(dotted: str) -> bool:
    return any(part.startswith("_") for part in dotted.split("."))


def _home_rank(defined_in: str, module: types.ModuleType) -> tuple[int, int, str]:
    """Sort key of the candidate homes of an object defined in a private module."""
    a, b = defined_in.split("."), module.__name__.split(".")
    common = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return -common, len(b), module.__name__


def _exports(module: types.ModuleType, attr: str) -> bool:
    names = vars(module).get("__all__")
    return not isinstance(names, (list, tuple)) or attr in names


def _objects(
    modules: Sequence[types.ModuleType], belongs: Callable[[str], bool]
) -> list[tuple[types.ModuleType, str, object]]:
    """``(home module, name, object)`` of the public classes and callables of ``modules``."""
    found, private = [], {}
    for module in modules:
        for attr, value in sorted(vars(module).items()):
            if attr.startswith("_"):
                continue
            defined_in, name = _defined_as(value)
            if defined_in is None or name != attr or not belongs(defined_in):
                continue
            if defined_in == module.__name__:
                found.append((module, attr, value))
            elif _is_private(defined_in) and _exports(module, attr):
                private.setdefault(id(value), (attr, value, defined_in, []))[3].append(module)
    for attr, value, defined_in, homes in private.values():
        found.append((min(homes, key=lambda m: _home_rank(defined_in, m)), attr, value))
    return found


def _methods(cls: type) -> list[tuple[str, object]]:
    methods = []
    for name, value in sorted(vars(cls).items()):
        if name.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if not inspect.isroutine(value):
            continue
        if getattr(value, "__qualname__", None) == f"{cls.__qualname__}.{name}":
            methods.append((name, value))
    return methods


def _module_texts(module, objects, package: str) -> list[tuple[tuple, dict[str, str]]]:
    """``(sort key, example)`` for the paragraphs of a module and its objects."""
    docs = [("", module)]
    for attr, value in objects:
        docs.append((attr, value))
        if inspect.isclass(value):
            docs.extend((f"{attr}.{name}", method) for name, method in _methods(value))
    rows = []
    for qualname, obj in docs:
        doc = _own_doc(obj)
        if doc is None:
            continue
        name = f"{module.__name__}.{qualname}" if qualname else module.__name__
        for i, text in enumerate(docstring_paragraphs(doc)):
            example = {"text": text, "package": package, "module": module.__name__, "object": name}
            try:
                for value in example.values():
                    value.encode("utf-8")
            except UnicodeEncodeError:
                continue
            rows.append(((module.__name__, qualname, i), example))
    return rows


def _harvest_modules(modules, package: str, belongs) -> list[tuple[tuple, dict[str, str]]]:
    by_module: dict[str, list] = {m.__name__: [] for m in modules}
    for home, attr, value in _objects(modules, belongs):
        by_module[home.__name__].append((attr, value))
    rows = []
    for module in modules:
        rows.extend(_module_texts(module, by_module[module.__name__], package))
    return rows


def _stdlib_member(defined_in: str) -> bool:
    return defined_in.split(".")[0] in sys.stdlib_module_names


def harvest_python_docs(packages: Sequence[str] | None = None) -> list[dict[str, str]]:
    """Harvests the prose paragraphs of the docstrings of installed Python packages.

    This is the corpus of the ``python_docs`` dataset, built in this process by importing the
    packages' public modules (warnings and output suppressed). The rules (which modules and
    objects, which paragraphs, deduplication and order) are in ``PythonDocs``'s description;
    the result depends only on the installed packages (the dataset harvests in a fresh
    interpreter, so that what this process imported or patched does not count).

    Args:
      packages: names among ``"numpy"``, ``"scipy"``, ``"jax"``, ``"flax"``, ``"optax"``,
        ``"matplotlib"`` and ``"stdlib"`` (the whole standard library), or top-level
        standard-library modules such as ``"json"`` (that module with its public submodules,
        package ``"stdlib"``); ``None`` harvests all seven packages (about 6 s, 19,400 texts). An
        object defined in a private module is harvested in the best of the walked modules
        that export it, so a part harvested alone can name a different home than the whole.

    Returns:
      A list of dicts with string values ``text`` (a paragraph, whitespace-collapsed, 8 to 120
      words), ``package``, ``module`` and ``object`` (the qualified name of the documented
      object, or the module name), sorted by module, then object, then paragraph position,
      without two equal texts (the first is kept).

    Raises:
      ValueError: if ``packages`` is not a non-empty sequence of the names above.

    Examples:
      >>> from jaxemb import data
      >>> texts = data.harvest_python_docs(["colorsys"])
      >>> texts[0]["package"], texts[0]["module"], texts[0]["object"]
      ('stdlib', 'colorsys', 'colorsys')
      >>> texts[0]["text"]
      'Conversion functions between RGB and other color systems.'
      >>> all(len(t["text"].split()) >= 8 for t in texts)
      True

    References:
      O'Neill et al. (2024), "Disentangling Dense Embeddings with Sparse Autoencoders" (a
      corpus of short texts to embed and decompose); the docstrings come from
      ``inspect.getdoc``, the section conventions from numpydoc and the Google Python Style
      Guide.
    """
    names = _check_packages(packages)
    stdlib_tops = sorted(
        set(harvestable_modules() if "stdlib" in names else [])
        | {n for n in names if n not in PACKAGES}
    )
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if stdlib_tops:
            root = _stdlib_dir()
            modules = [m for top in stdlib_tops for m in _walk(top, root, builtin=True)]
            rows.extend(_harvest_modules(modules, "stdlib", _stdlib_member))
        for package in sorted(set(names) & set(THIRD_PARTY_PACKAGES)):
            top = _import_quietly(package)
            if top is None:
                continue
            root = os.path.realpath(os.path.dirname(top.__file__))
            modules = _walk(package, root, skip=EXCLUDED_PACKAGE_MODULES)
            rows.extend(
                _harvest_modules(
                    modules, package, lambda m, p=package: m == p or m.startswith(p + ".")
                )
            )
    rows.sort(key=lambda row: row[0])
    seen, unique = set(), []
    for _, example in rows:
        if example["text"] not in seen:
            seen.add(example["text"])
            unique.append(example)
    return unique


def _versions(packages: Sequence[str]) -> dict[str, str]:
    """Python's version and the installed versions of the third-party ``packages``."""
    versions = {"python": sys.version}
    for package in THIRD_PARTY_PACKAGES:
        if package in packages:
            try:
                versions[package] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                versions[package] = "not installed"
    return versions


# ----------------------------------------------------------------------------- builder


@dataclasses.dataclass(eq=False)
class PythonDocsConfig(tfds.core.BuilderConfig):
    """Which packages a ``python_docs`` config harvests (names as for ``harvest_python_docs``)."""

    packages: tuple[str, ...] = PACKAGES


ALL_CONFIG = PythonDocsConfig(
    name="all", description="numpy, scipy, jax, flax, optax, matplotlib and the stdlib."
)
STDLIB_CONFIG = PythonDocsConfig(
    name="stdlib",
    description="The standard library only (reproducible for a Python installation alone).",
    packages=("stdlib",),
)


class PythonDocs(tfds.core.GeneratorBasedBuilder):
    """Docstring paragraphs of numpy, scipy, jax, flax, optax, matplotlib and the stdlib.

    No download: the corpus is harvested from the installed packages, in a fresh interpreter,
    so it depends on their versions, which the prepared dataset's metadata records
    (``builder.info.metadata["versions"]``, with ``num_texts`` per package). Read it with
    ``jaxemb.data.load_arrays("python_docs", "train")`` (config ``"all"``, the default, or
    ``"stdlib"``); text features arrive as bytes.

    Examples:
      >>> from jaxemb import data
      >>> import tempfile
      >>> builder = data.PythonDocs(data_dir=tempfile.mkdtemp(), file_format="array_record")
      >>> sorted(builder.info.features), builder.builder_config.name
      (['module', 'object', 'package', 'text'], 'all')

    References:
      O'Neill et al. (2024), "Disentangling Dense Embeddings with Sparse Autoencoders".
    """

    VERSION = tfds.core.Version("1.0.0")
    # TFDS derives code_path from the package with `importlib_resources`, which is not a
    # dependency of TFDS and may be missing; pointing it at this file avoids that import.
    code_path = epath.Path(__file__)
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [ALL_CONFIG, STDLIB_CONFIG]
    DEFAULT_CONFIG_NAME = "all"

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {name: tfds.features.Text() for name in ("text", "package", "module", "object")}
            ),
            disable_shuffling=True,
            homepage="https://docs.python.org/3/library/inspect.html#inspect.getdoc",
            citation=CITATION,
            license="The licenses of the harvested packages (BSD-3-Clause, Apache-2.0, PSF-2.0)",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # The corpus comes from the installed packages.
        packages = list(self.builder_config.packages)
        examples = _harvest_in_fresh_interpreter(
            "harvest_python_docs", env=HARVEST_ENV, packages=packages
        )
        counts: dict[str, int] = {}
        for example in examples:
            counts[example["package"]] = counts.get(example["package"], 0) + 1
        self.info.metadata.update(
            {
                "versions": _versions(packages),
                "packages": packages,
                "num_texts": dict(sorted(counts.items())),
            }
        )
        return {"train": self._generate_examples(examples)}

    def _generate_examples(self, examples):
        yield from enumerate(examples)
