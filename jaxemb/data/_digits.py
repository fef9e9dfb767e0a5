"""The UCI optical handwritten digits (scikit-learn's copy) as a TFDS builder."""

from __future__ import annotations

import gzip
import importlib.resources

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

NUM_EXAMPLES = 1797
NUM_CLASSES = 10
TEST_FRACTION = 0.2
SPLIT_SEED = 0

CITATION = r"""@misc{alpaydin1998optdigits,
  author       = {Alpaydin, E. and Kaynak, C.},
  title        = {Optical Recognition of Handwritten Digits},
  year         = {1998},
  howpublished = {UCI Machine Learning Repository},
  note         = {Licence CC BY 4.0}
}
@article{alpaydin1998cascading,
  author  = {Alpaydin, Ethem and Kaynak, Cenk},
  title   = {Cascading Classifiers},
  journal = {Kybernetika},
  volume  = {34},
  number  = {4},
  pages   = {369--374},
  year    = {1998}
}"""

HOMEPAGE = "https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits"

DESCRIPTION = """\
The test set of the UCI optical recognition of handwritten digits data (E. Alpaydin and
C. Kaynak, 1998), as shipped with scikit-learn (`sklearn.datasets.load_digits`): 1,797 images
of 8x8 pixels with integer values 0..16 (the number of on pixels in each 4x4 block of a 32x32
bitmap), 10 classes. Licence: CC BY 4.0. The csv is embedded in jaxemb (no download).

Features: `image` uint8 [8, 8, 1] with values 0..16 (divide by 16 for [0, 1]); `label`
ClassLabel(10); `index` int64, the row of the example in the embedded csv.

Splits (fixed, stratified): for each class c, the rows of class c in csv order are permuted by
`np.random.default_rng(0).permutation(n_c)` (a fresh generator per class) and the first
`floor(0.2 * n_c + 0.5)` of them form `test`; the rest form `train` (1,438 train / 359 test).
Examples within a split are stored in increasing csv row order.
"""


def read_digits_csv() -> tuple[np.ndarray, np.ndarray]:
    """Reads the embedded csv: pixels uint8 [1797, 64] (0..16) and labels int64 [1797]."""
    resource = importlib.resources.files("jaxemb.data").joinpath("digits.csv.gz")
    with resource.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    if table.shape != (NUM_EXAMPLES, 65):
        raise ValueError(
            f"the embedded digits.csv.gz must hold [{NUM_EXAMPLES}, 65] integers (64 pixels and "
            f"a label per row); got {list(table.shape)}. The jaxemb installation is damaged: "
            f"reinstall the package."
        )
    return table[:, :64].astype(np.uint8), table[:, 64]


def split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """The fixed stratified split: csv row indices of ``train`` and ``test``, each sorted."""
    test = []
    for c in range(NUM_CLASSES):
        rows = np.flatnonzero(labels == c)
        n_test = int(np.floor(TEST_FRACTION * len(rows) + 0.5))
        perm = np.random.default_rng(SPLIT_SEED).permutation(len(rows))
        test.append(rows[perm[:n_test]])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return {"train": train, "test": test}


class Digits(tfds.core.GeneratorBasedBuilder):
    """UCI optical handwritten digits, 8x8, 10 classes (embedded; no download)."""

    VERSION = tfds.core.Version("1.0.0")
    # TFDS derives code_path from the package with `importlib_resources`, which is not a
    # dependency of TFDS and may be missing; pointing it at this file avoids that import.
    code_path = epath.Path(__file__)
    RELEASE_NOTES = {"1.0.0": "Initial release: scikit-learn's copy, stratified 80/20 split."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                    "index": tfds.features.Scalar(dtype=np.int64),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            homepage=HOMEPAGE,
            citation=CITATION,
            license="CC BY 4.0",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # The data is embedded in the package.
        pixels, labels = read_digits_csv()
        splits = split_indices(labels)
        return {
            name: self._generate_examples(pixels=pixels, labels=labels, rows=rows)
            for name, rows in splits.items()
        }

    def _generate_examples(self, pixels, labels, rows):
        for row in rows:
            yield (
                int(row),
                {
                    "image": pixels[row].reshape(8, 8, 1),
                    "label": int(labels[row]),
                    "index": int(row),
                },
            )
