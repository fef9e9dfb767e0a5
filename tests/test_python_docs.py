"""Tests for the python_docs dataset: docstring paragraphs of the installed packages.

The paragraph filter is written again here from the dataset's description (line by line, with
``itertools.groupby`` for the blank-line split) and checked on hand-written docstrings whose
expected paragraphs are spelled out, and against the library on real docstrings. Harvests are
checked against the modules themselves (re-imported and read with ``inspect`` here), and the
prepared dataset against the harvest.
"""

import importlib
import inspect
import itertools
import json
import os
import pathlib
import re
import subprocess
import sys
import warnings

import pytest

from jaxemb import data
from jaxemb.data._python_docs import docstring_paragraphs

DROP = {
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
PROSE = {"note", "notes", "warning", "warnings"}


def _is_indented(line):
    return line[0] in " \t"


def _title(text):
    return " ".join(text.split()).lower()


def reference_paragraphs(doc):
    """The paragraph rules of the dataset's description, written again."""
    paragraphs = [
        [line.rstrip() for line in group]
        for nonblank, group in itertools.groupby(doc.splitlines(), key=lambda s: bool(s.strip()))
        if nonblank
    ]
    # 1. cut paragraphs at section titles into ("text", lines, opens_paragraph) and
    #    ("title", name, google) events
    underline = re.compile(r"\s*(-{3,}|={3,}|~{3,}|\^{3,}|\*{3,}|\+{3,}|#{3,})\s*")
    events = []
    for para in paragraphs:
        begin = k = 0
        while k < len(para):
            line, nxt = para[k], para[k + 1] if k + 1 < len(para) else None
            numpy_title = (
                nxt is not None
                and underline.fullmatch(nxt)
                and not underline.fullmatch(line)
                and not _is_indented(line)
                and not line.startswith(">>>")
            )
            google = re.fullmatch(r"([A-Z][A-Za-z ]*):\s*", line)
            google_title = (
                google is not None
                and _title(google.group(1)) in DROP | PROSE
                and (k == 0 or (nxt is not None and _is_indented(nxt)))
            )
            if numpy_title or google_title:
                events.append(("text", para[begin:k], begin == 0))
                name = _title(line) if numpy_title else _title(google.group(1))
                events.append(("title", name, not numpy_title))
                k += 2 if numpy_title else 1
                begin = k
            else:
                k += 1
        events.append(("text", para[begin:], begin == 0))
    # 2. keep the prose
    out = []
    dropping = google = False
    literal = None  # indentation of the "::" or directive paragraph whose body is skipped
    for kind, value, flag in events:
        if kind == "title":
            dropping, google, literal = value in DROP, flag, None
            continue
        lines = value
        if not lines:
            continue
        all_indented = all(_is_indented(line) for line in lines)
        if google and flag and not all_indented:
            dropping = google = False
        indent = min(len(line) - len(line.lstrip()) for line in lines)
        if literal is not None and indent > literal:
            continue
        literal = None
        if dropping:
            continue
        if google and all_indented:
            lines, all_indented = [line.strip() for line in lines], False
        directive = [i for i, line in enumerate(lines) if re.match(r"\.\.(\s|$)", line)]
        if directive:
            literal, lines = indent, lines[: directive[0]]
        if not lines or all_indented:
            continue
        if any(line.strip().startswith(">>>") for line in lines):
            continue
        if (
            len(lines) >= 2
            and _is_indented(lines[1])
            and not _is_indented(lines[0])
            and not re.match(r"([-*+\u2022]|\d+[.)]|#\.)\s", lines[0])
        ):
            continue
        if any(re.fullmatch(r"\s*[-=+|]{3,}[-=+|\s]*", line) for line in lines):
            continue
        words = " ".join(lines).split()
        if words and words[-1].endswith("::"):
            literal = indent
            if words[-1] == "::":
                words = words[:-1]
            else:
                words[-1] = words[-1][:-1]
        text = " ".join(words)
        if re.fullmatch(r"[\w.]+\(.*\)(\s*->\s*\S.*)?", text):
            continue
        if 8 <= len(words) <= 120:
            out.append(text)
    return out


NUMPYDOC = """Compute the weighted average of the entries of an array along an axis.

The weights may be given as an array of the same shape, or broadcast
against it; entries with zero weight are ignored entirely.

Parameters
----------
a : array_like
    Array containing the data to be averaged over the chosen axis.
weights : array_like, optional
    The weights associated with the values in `a`, one for each value.

    A second paragraph of the description of weights, long enough to count.

Returns
-------
avg : ndarray
    The average along the specified axis, as a new array of floats.

See Also
--------
mean : The unweighted average of the entries of an array along an axis.

Notes
-----
The weighted average is the sum of the products of the values and their
weights, divided by the sum of the weights, as usual in statistics.

.. versionadded:: 1.2.0
    Support for weights that broadcast against the data array.

References
----------
.. [1] A. Author, "A paper about weighted averages of many numbers", 1999.

Examples
--------
Averaging a small array with equal weights gives the ordinary mean value:

>>> average([1, 2, 3])
2.0
>>> print("-" * 5)
-----

This prose still belongs to the examples section and is dropped with it.
"""

NUMPYDOC_EXPECTED = [
    "Compute the weighted average of the entries of an array along an axis.",
    "The weights may be given as an array of the same shape, or broadcast against it; "
    "entries with zero weight are ignored entirely.",
    "The weighted average is the sum of the products of the values and their weights, "
    "divided by the sum of the weights, as usual in statistics.",
]

GOOGLE = """Applies a random dropout mask to the input array during training.
Args:
  inputs: the inputs that should be randomly masked by this function.
  rate: the probability of masking out a value, between zero and one.

    A continuation paragraph of the rate argument that is long enough.

Returns:
  The masked inputs, scaled by one over one minus the rate when training.

Note:
  The mask is drawn from the ``dropout`` random stream, so it changes
  from one call to the next unless the stream is reset by the caller.

  A second note paragraph that is also long enough to be kept here.

  .. code-block:: python

    rngs = nnx.Rngs(dropout=0, params=1, other=2, more=3, still=4, last=5)

  Use a fixed stream for reproducible results, for example::

    rngs = nnx.Rngs(dropout=0, params=1, other=2, more=3, still=4, last=5)

This paragraph comes after the sections and is prose that is kept again.

Raises:
  ValueError: if the rate is not between zero and one, inclusive of both.
There are several edge cases that are handled without raising a
warning:
"""

GOOGLE_EXPECTED = [
    "Applies a random dropout mask to the input array during training.",
    "The mask is drawn from the ``dropout`` random stream, so it changes from one call to "
    "the next unless the stream is reset by the caller.",
    "A second note paragraph that is also long enough to be kept here.",
    "Use a fixed stream for reproducible results, for example:",
    "This paragraph comes after the sections and is prose that is kept again.",
]

REST = """encode(obj, indent=None, sort_keys=False) -> str

Serialize an object to text, one line per entry when an indent is given.

Use it like this, with any object that the encoder knows how to serialize::

    text = encode({"a": 1}, indent=2)
    print(text, "is the encoded text of the dictionary")

The supported options are these, each one documented in its own place:

- ``indent``: the number of spaces of each level of nesting, or
  None for the most compact form on one single line of text.
- ``sort_keys``: whether the keys of mappings are sorted first.

default
    A function that is called for objects that cannot otherwise be serialized.

=========  ==========================================
Option     Meaning of the option in a few more words
=========  ==========================================
indent     the number of spaces of each nesting level
=========  ==========================================

These seven words are too few here.
These eight words are just enough to keep.
Some text that ends with a marker after a space so that it counts ::

    code(that, is, dropped, because, it, is, a, literal, block)

.. note:: This directive's text is dropped even though it is long enough.
   And its continuation too, since it is the directive's body.

Prose after the directive with sufficiently many words to be kept.

There are several edge cases that are handled without raising a
warning:

Pass the option explicitly when the default does not suit, as in this
Example:
the value given is then used instead of the default one.
"""

REST_EXPECTED = [
    "Serialize an object to text, one line per entry when an indent is given.",
    "Use it like this, with any object that the encoder knows how to serialize:",
    "The supported options are these, each one documented in its own place:",
    "- ``indent``: the number of spaces of each level of nesting, or None for the most "
    "compact form on one single line of text. - ``sort_keys``: whether the keys of mappings "
    "are sorted first.",
    "These seven words are too few here. These eight words are just enough to keep. Some "
    "text that ends with a marker after a space so that it counts",
    "Prose after the directive with sufficiently many words to be kept.",
    "There are several edge cases that are handled without raising a warning:",
    "Pass the option explicitly when the default does not suit, as in this Example: the value "
    "given is then used instead of the default one.",
]


@pytest.mark.parametrize(
    "doc, expected",
    [(NUMPYDOC, NUMPYDOC_EXPECTED), (GOOGLE, GOOGLE_EXPECTED), (REST, REST_EXPECTED)],
    ids=["numpydoc", "google", "rest"],
)
def test_paragraph_filter_on_handwritten_docstrings(doc, expected):
    assert reference_paragraphs(doc) == expected
    assert docstring_paragraphs(doc) == expected


def test_paragraph_filter_word_limits():
    def words(n):
        return " ".join(f"w{i}" for i in range(n)) + "."

    doc = "\n\n".join(words(n) for n in (7, 8, 120, 121))
    assert docstring_paragraphs(doc) == [words(8), words(120)]
    assert docstring_paragraphs("Title\n=====\n\n" + words(9)) == [words(9)]  # a kept section
    assert docstring_paragraphs("a(x)\n\nshort") == []
    assert docstring_paragraphs("") == []


def _installed_docstrings():
    names = ["argparse", "json", "email.message", "numpy", "numpy.linalg", "scipy.linalg"]
    names += ["optax", "flax.linen", "matplotlib.axes"]
    docs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            module = importlib.import_module(name)
            objects = [module, *vars(module).values()]
            objects += [
                m for c in vars(module).values() if inspect.isclass(c) for m in vars(c).values()
            ]
            for obj in objects:
                try:
                    doc = obj.__doc__
                except Exception:  # noqa: BLE001 - a lazy proxy may fail on any attribute
                    continue
                if isinstance(doc, str) and doc.strip():
                    docs.append(inspect.cleandoc(doc))
    return docs


def test_paragraph_filter_matches_reference_on_installed_docstrings():
    docs = _installed_docstrings()
    assert len(docs) > 2000
    n_paragraphs = 0
    for doc in docs:
        expected = reference_paragraphs(doc)
        assert docstring_paragraphs(doc) == expected, doc[:300]
        n_paragraphs += len(expected)
    assert n_paragraphs > 3000


# ----------------------------------------------------------------------------- harvest


def _check_invariants(examples, packages):
    assert examples
    texts = [e["text"] for e in examples]
    assert len(set(texts)) == len(texts)
    for e in examples:
        assert sorted(e) == ["module", "object", "package", "text"]
        assert all(isinstance(v, str) for v in e.values())
        assert 8 <= len(e["text"].split()) <= 120, e
        assert e["text"] == " ".join(e["text"].split())
        assert ">>>" not in e["text"]
        assert e["object"] == e["module"] or e["object"].startswith(e["module"] + "."), e
        assert not any(p.startswith("_") for p in e["object"].split(".")), e
        assert e["package"] in packages
        if e["package"] != "stdlib":
            assert e["module"].split(".")[0] == e["package"]
    keys = [(e["module"], e["object"]) for e in examples]
    assert keys == sorted(keys)


def _resolve(example):
    module = importlib.import_module(example["module"])
    obj = module
    for attr in example["object"][len(example["module"]) :].split(".")[1:]:
        obj = vars(obj)[attr]
    return getattr(obj, "__func__", obj)


@pytest.fixture(scope="module")
def json_docs():
    return data.harvest_python_docs(["json", "textwrap"])


def test_small_stdlib_harvest(json_docs):
    _check_invariants(json_docs, {"stdlib"})
    assert {e["module"].split(".")[0] for e in json_docs} == {"json", "textwrap"}
    # every text is a paragraph of the named object's own docstring
    for e in json_docs:
        obj = _resolve(e)
        assert e["text"] in reference_paragraphs(inspect.getdoc(obj)), e
    # every paragraph of every public function, class and method defined in those modules is
    # there (perhaps under an earlier object, when it repeats one)
    texts = {e["text"] for e in json_docs}
    expected = set()
    for name in ["json", "json.decoder", "json.encoder", "json.scanner", "json.tool", "textwrap"]:
        module = importlib.import_module(name)
        objects = [module]
        for attr, value in vars(module).items():
            if attr.startswith("_") or getattr(value, "__module__", None) != name:
                continue
            objects.append(value)
            if inspect.isclass(value):
                objects += [
                    getattr(m, "__func__", m)
                    for k, m in vars(value).items()
                    if not k.startswith("_") and inspect.isroutine(getattr(m, "__func__", m))
                ]
        for obj in objects:
            if isinstance(obj.__doc__, str):
                expected.update(reference_paragraphs(inspect.getdoc(obj)))
    assert expected == texts
    # known objects, harvested where they are defined (JSONDecoder is re-exported by json)
    by_object = {e["object"]: e for e in json_docs}
    assert by_object["json.decoder.JSONDecoder.decode"]["module"] == "json.decoder"
    assert not any(o.startswith("json.JSONDecoder") for o in by_object)
    assert json_docs[0]["object"] == "json" and json_docs[0]["text"].startswith("JSON (JavaScript")


def test_third_party_harvest_homes_private_definitions():
    docs = data.harvest_python_docs(["optax"])
    _check_invariants(docs, {"optax"})
    by_object = {}
    for e in docs:
        by_object.setdefault(e["object"], e)
    # optax.adam is defined in optax._src.alias and harvested where optax exports it
    assert by_object["optax.adam"]["module"] == "optax"
    import optax

    assert optax.adam.__module__.startswith("optax._")
    for e in docs:
        obj = _resolve(e)
        assert e["text"] in reference_paragraphs(inspect.getdoc(obj)), e


def test_invalid_inputs():
    with pytest.raises(ValueError, match="packages must be a non-empty sequence"):
        data.harvest_python_docs("numpy")
    with pytest.raises(ValueError, match="packages must be a non-empty sequence"):
        data.harvest_python_docs([])
    with pytest.raises(ValueError, match=r"packages must hold .* got \['numpyy'\]"):
        data.harvest_python_docs(["numpy", "numpyy"])
    with pytest.raises(ValueError, match=r"got \['antigravity', 3\]"):
        data.harvest_python_docs(["antigravity", 3])
    with pytest.raises(ValueError, match="doc must be a docstring"):
        docstring_paragraphs(None)
    with pytest.raises(ValueError, match=r"config for 'python_docs' must be one of"):
        data.data_source("python_docs", "train", config="numpy")
    with pytest.raises(ValueError, match=r"must be None or a config name \(\['all', 'stdlib'\]\);"):
        data.data_source("python_docs", "train", config=3)


# ----------------------------------------------------------------------------- dataset


def test_dataset_is_the_harvest_and_rebuilds_identically(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    arrays = data.load_arrays("python_docs", "train", data_dir=first, config="stdlib")
    stored = [{k: arrays[k][i].decode("utf-8") for k in arrays} for i in range(len(arrays["text"]))]
    # the harvest in an interpreter of its own: in this one pytest has replaced hooks such as
    # sys.unraisablehook, which then are no longer sys's own functions
    root = pathlib.Path(data.__file__).parents[2]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    )
    script = (
        "import json, sys\n"
        "from jaxemb.data import harvest_python_docs\n"
        "json.dump(harvest_python_docs(['stdlib']), sys.stdout)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert stored == json.loads(out)
    _check_invariants(stored, {"stdlib"})
    assert len(stored) > 3000
    builder = data.PythonDocs(data_dir=str(first), config="stdlib")
    meta = builder.info.metadata
    assert meta["versions"] == {"python": sys.version}
    assert meta["packages"] == ["stdlib"] and meta["num_texts"] == {"stdlib": len(stored)}
    assert builder.info.splits["train"].num_examples == len(stored)
    # a second preparation writes the same bytes
    data.data_source("python_docs", "train", data_dir=second, config="stdlib")
    files = sorted(p.name for p in (first / "python_docs" / "stdlib" / "1.0.0").iterdir())
    assert any("array_record" in f for f in files)
    for name in files:
        if "array_record" in name or name == "metadata.json":
            a = (first / "python_docs" / "stdlib" / "1.0.0" / name).read_bytes()
            assert a == (second / "python_docs" / "stdlib" / "1.0.0" / name).read_bytes(), name
    assert json.loads((first / "python_docs" / "stdlib" / "1.0.0" / "metadata.json").read_text())


def test_default_config_is_every_package(tmp_path):
    builder = data.PythonDocs(data_dir=str(tmp_path))
    assert builder.builder_config.name == "all"
    assert list(builder.builder_config.packages) == [
        "numpy",
        "scipy",
        "jax",
        "flax",
        "optax",
        "matplotlib",
        "stdlib",
    ]
    assert sorted(builder.info.features) == ["module", "object", "package", "text"]
