"""SAE configs: one frozen dataclass per variant, the registry, and the experiment reading them."""

import dataclasses
import inspect

import pytest
from flax import nnx

from experiments import train_sae
from jaxemb import sae

REQUIRED = {"topk": {"k": 3}, "batchtopk": {"k": 3}, "matryoshka": {"k": 3, "group_sizes": (4, 12)}}
REQUIRED["matching_pursuit"] = {"n_steps": 2}


@pytest.mark.parametrize("variant", sorted(sae.sae_configs()))
def test_config_defaults_are_the_constructor_defaults_and_round_trip(variant):
    config_cls = sae.sae_configs()[variant]
    module_cls = sae.sae_variants()[variant]
    assert module_cls.__name__ == config_cls.module and dataclasses.is_dataclass(config_cls)
    # every constructor argument (except rngs) is a config field with the same default
    params = inspect.signature(module_cls.__init__).parameters
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    assert set(params) - {"self", "rngs"} == set(fields)
    for name, p in params.items():
        if name in ("self", "rngs", "d_in", "d_sae", "param_dtype"):
            continue
        if p.default is inspect.Parameter.empty:
            assert fields[name].default is dataclasses.MISSING, name
        else:
            assert fields[name].default == p.default or (name == "normalize_decoder"), name
    # a module keeps the config it was built with; the config builds the same module
    direct = module_cls(16, 16, rngs=nnx.Rngs(0), **REQUIRED.get(variant, {}))
    assert isinstance(direct.config, config_cls)
    rebuilt = direct.config.build(rngs=nnx.Rngs(0))
    assert rebuilt.config == direct.config and type(rebuilt) is module_cls
    assert config_cls.create(direct.config.to_dict()) == direct.config
    with pytest.raises(dataclasses.FrozenInstanceError):
        direct.config.d_sae = 3


def test_unknown_or_missing_keys_are_named():
    with pytest.raises(ValueError, match="'kk' is not a setting of TopKConfig"):
        sae.TopKConfig.create({"d_in": 4, "d_sae": 8, "kk": 2})
    with pytest.raises(ValueError, match=r"TopKConfig needs \['k'\]"):
        sae.TopKConfig.create({"d_in": 4, "d_sae": 8})
    with pytest.raises(ValueError, match="param_dtype must be a dtype"):
        sae.ReluConfig.create({"d_in": 4, "d_sae": 8, "param_dtype": "no-such-type"})


def test_train_sae_reads_the_config(tmp_path, capsys):
    argv = ["--workdir", str(tmp_path / "w"), "variant='relu'", "variant_kwargs={'l2_coef': 1.0}"]
    argv.append(f"data_dir={str(tmp_path / 'data')!r}")
    assert train_sae.main(argv) == 2
    err = capsys.readouterr().err
    assert "'l2_coef' is not a setting of ReluConfig" in err and "l1_coef" in err
    assert not (tmp_path / "data").exists() and not (tmp_path / "w").exists()  # before any work
