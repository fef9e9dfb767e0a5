"""jaxemb's experiments: full runs composed from the library.

Each module is one experiment — ``quickstart`` (the README's main job), ``moco``,
``train_sae`` — run from the repository root as ``python -m experiments.NAME --workdir DIR
key=value ...``. An experiment declares its config once (a frozen ``jaxemb.experiment.Config``)
and uses the shared run machinery of ``jaxemb.experiment``; experiments import each other's
public pieces (``moco`` reuses the quickstart's model and SimCLR trainer).
"""
