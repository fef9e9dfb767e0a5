"""jaxemb.data: TFDS datasets (embedded ones prepared on first use), grain pipelines, augmentations.

The embedded datasets need no network: ``digits`` (UCI optical handwritten digits, the copy in
scikit-learn, CC BY 4.0; see ``digits_citation.rst``) and ``planted_dictionary`` (synthetic
sparse codes over a known dictionary). Any TFDS dataset prepared in array_record format goes
through the same ``data_source`` / ``make_pipeline`` path.
"""

from jaxemb.data._augment import augment_images as augment_images
from jaxemb.data._code_search import PythonCodeSearch as PythonCodeSearch
from jaxemb.data._code_search import harvest_python_code_search as harvest_python_code_search
from jaxemb.data._code_search import python_code_search_tokenizer as python_code_search_tokenizer
from jaxemb.data._digits import Digits as Digits
from jaxemb.data._paths import default_data_dir as default_data_dir
from jaxemb.data._pipeline import BatchIterator as BatchIterator
from jaxemb.data._pipeline import make_pipeline as make_pipeline
from jaxemb.data._planted import PlantedDictionary as PlantedDictionary
from jaxemb.data._planted import PlantedDictionaryConfig as PlantedDictionaryConfig
from jaxemb.data._python_docs import PythonDocs as PythonDocs
from jaxemb.data._python_docs import harvest_python_docs as harvest_python_docs
from jaxemb.data._sources import data_source as data_source
from jaxemb.data._sources import load_arrays as load_arrays
from jaxemb.data._sources import planted_dictionary_atoms as planted_dictionary_atoms

__all__ = [
    "BatchIterator",
    "Digits",
    "PlantedDictionary",
    "PlantedDictionaryConfig",
    "PythonCodeSearch",
    "PythonDocs",
    "augment_images",
    "data_source",
    "default_data_dir",
    "harvest_python_code_search",
    "harvest_python_docs",
    "load_arrays",
    "make_pipeline",
    "planted_dictionary_atoms",
    "python_code_search_tokenizer",
]
