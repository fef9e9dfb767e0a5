"""Tests for the python_code_search dataset and its WordPiece tokenizer.

Every example is checked against the standard library itself (re-imported and read with
``inspect`` here), the split against the documented hash rule written again, and the tokenizer
against BERT's basic tokenization of ASCII text written again with ``re``.
"""

import ast
import hashlib
import importlib
import inspect
import json
import linecache
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import unicodedata
import warnings

import pytest

from jaxemb import data

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _decode(example):
    return {k: v.decode("utf-8") for k, v in example.items()}


def _read_split(split, data_dir):
    source = data.data_source("python_code_search", split, data_dir=data_dir)
    return [_decode(source[i]) for i in range(len(source))]


@pytest.fixture(scope="module")
def data_dir(shared_data_dir):
    return pathlib.Path(shared_data_dir)  # prepared once per test run (the experiment's too)


@pytest.fixture(scope="module")
def splits(data_dir):
    return {s: _read_split(s, data_dir) for s in ("train", "test")}


@pytest.fixture(scope="module")
def tokenizer(splits, data_dir):
    del splits  # prepared by the fixture above
    return data.python_code_search_tokenizer(data_dir=data_dir)


def _resolve(name):
    """The raw function named ``<module>.<qualname>``, found by importing the longest prefix."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        obj = module
        for attr in parts[i:]:
            obj = vars(obj)[attr]
        return module, getattr(obj, "__func__", obj)
    raise AssertionError(f"cannot import any prefix of {name}")


def _summary(doc):
    first = re.split(r"\n[ \t]*\n", doc.strip(), maxsplit=1)[0]
    return " ".join(first.split())


def _bucket_is_test(module):
    digest = hashlib.sha256(module.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < 0.2


def test_every_example_is_a_docstring_summary_and_source_of_the_named_function(splits):
    examples = splits["train"] + splits["test"]
    frozen = n_reindented = 0
    for ex in examples:
        assert ex["query"] and ex["code"].strip(), ex["name"]
        assert ex["module"] == ex["name"].split(".")[0]
        assert not any(p.startswith("_") for p in ex["name"].split(".")), ex["name"]
        module, func = _resolve(ex["name"])
        assert inspect.isfunction(func), ex["name"]
        assert func.__module__ == module.__name__
        assert module.__name__ + "." + func.__qualname__ == ex["name"]
        assert isinstance(func.__doc__, str) and func.__doc__.strip(), ex["name"]
        assert ex["query"] == _summary(inspect.getdoc(func)), ex["name"]
        assert len(ex["query"].split()) >= 2
        try:
            source = inspect.getsource(func)
        except OSError:  # frozen module: the code must be the function's block in its file
            frozen += 1
            code = inspect.unwrap(func).__code__
            frozen_name = code.co_filename.removeprefix("<frozen ").removesuffix(">")
            assert frozen_name in (module.__name__, "_collections_abc"), ex["name"]
            lines = linecache.getlines(sys.modules[frozen_name].__file__)
            node = next(
                n
                for n in ast.walk(ast.parse("".join(lines)))
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                and (n.decorator_list[0] if n.decorator_list else n).lineno == code.co_firstlineno
            )
            source = "".join(lines[code.co_firstlineno - 1 : node.end_lineno])
        expected = textwrap.dedent(source)
        indent = re.match(r"[ \t]*", expected).group()
        if indent:  # a string literal indented less than the def: strip the def's indentation
            expected = "".join(
                line.removeprefix(indent) for line in expected.splitlines(keepends=True)
            )
            n_reindented += 1
        # the docstring statement (the query's source) is left out, nothing else; a docstring
        # set by assignment (e.g. base64's b32decode.__doc__ = ...) is not in the block
        func_node = next(
            n
            for n in ast.parse(expected).body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
        )
        first = func_node.body[0]
        has_doc = isinstance(first, ast.Expr) and isinstance(
            getattr(first, "value", None), ast.Constant
        )
        has_doc = has_doc and isinstance(first.value.value, str)
        lo, hi = (first.lineno, first.end_lineno) if has_doc else (0, -1)
        kept = [
            line
            for i, line in enumerate(expected.splitlines(keepends=True), start=1)
            if not lo <= i <= hi
        ]
        assert ex["code"] == "".join(kept), ex["name"]
        compile(ex["code"], ex["name"], "exec")  # a standalone, dedented block
    assert frozen > 50  # os, posixpath, codecs... are frozen in CPython 3.11+ yet included
    assert n_reindented < 0.02 * len(examples)


def test_no_duplicates_and_sorted(splits):
    examples = splits["train"] + splits["test"]
    names = [e["name"] for e in examples]
    assert len(set(names)) == len(names)
    pairs = {(e["query"], e["code"]) for e in examples}
    assert len(pairs) == len(examples)
    normalised = {" ".join(e["code"].split()) for e in examples}
    assert len(normalised) == len(examples)
    for split in splits.values():
        assert [e["name"] for e in split] == sorted(e["name"] for e in split)


def test_split_by_module_follows_the_hash_rule(splits):
    modules = {s: {e["module"] for e in splits[s]} for s in splits}
    assert not modules["train"] & modules["test"]
    assert all(_bucket_is_test(m) for m in modules["test"])
    assert not any(_bucket_is_test(m) for m in modules["train"])
    n_train, n_test = len(splits["train"]), len(splits["test"])
    assert n_train > 1000 and n_test > 200, (n_train, n_test)
    n_modules = len(modules["train"]) + len(modules["test"])
    assert 0.1 < len(modules["test"]) / n_modules < 0.3, (len(modules["test"]), n_modules)
    assert n_modules > 100
    print(f"python_code_search: {n_train} train / {n_test} test, {n_modules} modules")


def test_harvest_rules_on_known_functions(splits):
    by_name = {e["name"]: e for s in splits.values() for e in s}
    # textwrap by hand: its five documented functions and TextWrapper's two public methods.
    textwrap_names = sorted(n for n in by_name if n.startswith("textwrap."))
    assert textwrap_names == [
        "textwrap.TextWrapper.fill",
        "textwrap.TextWrapper.wrap",
        "textwrap.dedent",
        "textwrap.fill",
        "textwrap.indent",
        "textwrap.shorten",
        "textwrap.wrap",
    ]
    assert by_name["textwrap.dedent"]["code"].startswith("def dedent(text):\n")
    # Methods are named by their defining module; the package's re-export is not counted.
    assert "json.decoder.JSONDecoder.decode" in by_name
    assert not any(n.startswith("json.JSONDecoder") for n in by_name)
    assert "os.makedirs" in by_name  # a frozen module
    excluded = {"antigravity", "this", "idlelib", "tkinter", "turtle", "lib2to3", "distutils"}
    assert not excluded & {e["module"] for e in by_name.values()}
    assert not any(".test." in n or ".tests." in n for n in by_name)
    # The modules= restriction gives exactly that module's part of the full harvest.
    json_part = [e for e in splits["test"] + splits["train"] if e["module"] == "json"]
    assert data.harvest_python_code_search(["json"]) == sorted(json_part, key=lambda e: e["name"])


def test_fresh_interpreter_without_frozen_modules_harvests_the_same(splits):
    root = pathlib.Path(data.__file__).parents[2]
    path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    script = (
        "import json, sys\n"
        "from jaxemb.data import harvest_python_code_search\n"
        "json.dump(harvest_python_code_search(), sys.stdout)\n"
    )
    out = subprocess.run(
        [sys.executable, "-X", "frozen_modules=off", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    ).stdout
    fresh = json.loads(out)
    stored = sorted(splits["train"] + splits["test"], key=lambda e: e["name"])
    assert fresh == stored


def _bert_words(text):
    """BERT's basic tokenization of ASCII text: drop controls, lowercase, split punctuation."""
    text = "".join(c for c in text if c in "\t\n\r" or not unicodedata.category(c).startswith("C"))
    return re.findall(r"[a-z0-9]+|[^a-z0-9\s]", text.lower())


def test_tokenizer_layout_and_round_trip(tokenizer, splits):
    assert 7000 < tokenizer.get_vocab_size() <= 8000  # as many pieces as the corpus yields
    assert [tokenizer.token_to_id(t) for t in SPECIALS] == [0, 1, 2, 3, 4]
    enc = tokenizer.encode("Return the sum of a and b.")
    assert enc.tokens == ["[CLS]", "return", "the", "sum", "of", "a", "and", "b", ".", "[SEP]"]
    assert tokenizer.decode(enc.ids) == "return the sum of a and b."
    pair = tokenizer.encode("Sort a list.", "def f(x): pass")
    assert pair.ids[0] == 2 and pair.ids.count(3) == 2 and pair.ids[-1] == 3
    first_sep = pair.ids.index(3)
    assert pair.type_ids == [0] * (first_sep + 1) + [1] * (len(pair.ids) - first_sep - 1)
    n_tokens = n_unk = n_checked = 0
    texts = [t for e in splits["test"] for t in (e["query"], e["code"])]
    for text, enc in zip(texts, tokenizer.encode_batch(texts), strict=True):
        ids = enc.ids
        assert ids[0] == 2 and ids[-1] == 3 and 2 not in ids[1:-1] and 3 not in ids[1:-1]
        n_tokens += len(ids) - 2
        n_unk += ids.count(1)
        if text.isascii() and 1 not in ids:
            words, current = [], None
            for token in enc.tokens[1:-1]:
                if token.startswith("##"):
                    current += token[2:]
                else:
                    if current is not None:
                        words.append(current)
                    current = token
            words.append(current)
            assert words == _bert_words(text)
            n_checked += 1
    assert n_unk / n_tokens < 0.005, n_unk / n_tokens
    assert n_checked > 0.9 * len(texts)


def test_rebuild_is_deterministic(splits, tokenizer, data_dir, tmp_path):
    """A second preparation, in another directory and another process, holds the same examples
    in the same order, the same tokenizer and the same metadata.

    The array_record files themselves are compared by their records: TFDS serializes each
    example as a ``tf.train.Example`` whose feature map protobuf (upb) writes in a per-process
    hash order, so the container bytes of two processes differ for equal records.
    """
    del tokenizer  # the first preparation is done
    script = (
        "import json, sys\n"
        "from jaxemb import data\n"
        "out = {}\n"
        "for split in ('train', 'test'):\n"
        "    source = data.data_source('python_code_search', split, data_dir=sys.argv[1])\n"
        "    out[split] = [{k: v.decode() for k, v in source[i].items()}\n"
        "                  for i in range(len(source))]\n"
        "json.dump(out, open(sys.argv[2], 'w'))\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), str(tmp_path / "records.json")],
        check=True,
        capture_output=True,
    )
    again = json.loads((tmp_path / "records.json").read_text())
    for split in ("train", "test"):
        assert again[split] == splits[split], split
    first = data_dir / "python_code_search" / "2.0.0"
    second = tmp_path / "python_code_search" / "2.0.0"
    assert sorted(p.name for p in first.iterdir()) == sorted(p.name for p in second.iterdir())
    for name in ("tokenizer.json", "metadata.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    meta = json.loads((first / "metadata.json").read_text())
    assert meta["python_version"] == sys.version


def test_invalid_inputs():
    from jaxemb.data._code_search import train_wordpiece

    with pytest.raises(ValueError, match="modules must be a non-empty sequence"):
        data.harvest_python_code_search("json")
    with pytest.raises(ValueError, match="modules must be a non-empty sequence"):
        data.harvest_python_code_search([])
    with pytest.raises(ValueError, match=r"got \['antigravity'\]"):
        data.harvest_python_code_search(["json", "antigravity"])
    with pytest.raises(ValueError, match=r"got \['numpy'\]"):
        data.harvest_python_code_search(["numpy"])
    with pytest.raises(ValueError, match="texts must be a non-empty sequence"):
        train_wordpiece([])
    with pytest.raises(ValueError, match="texts must hold only strings"):
        train_wordpiece(["a", 3])
    with pytest.raises(ValueError, match="vocab_size"):
        train_wordpiece(["a b c"], vocab_size=8)
    with pytest.raises(ValueError, match="data_dir must be a path"):
        data.python_code_search_tokenizer(data_dir=3)
