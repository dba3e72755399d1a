"""ablate: hyperparameter searches and ablation grids for CIARD robust distillation.

Layers, top to bottom; a layer imports only the layers below it, and units on one line
(``|``) not each other (tests/test_architecture.py):

    cli          the ``ablate`` commands
    search       Optuna + ASHA through Ray Tune, its summary, confirm stage and around-grids
    grid         rows x seeds through Ray Tune, the table over seeds
    runtime      Ray: run or resume one job, log its trials  | evaluation  ``ablate eval``
    tracking     MLflow  | report  plots, tables, statistics  | trainables  a Ray Tune trial
                 | cost  what a search or grid will cost (``--dry-run``)
    build        checked config -> data, networks, teachers, trainer (torch)
    config       what a user writes, validated (no torch, Ray or MLflow)
    core         plain PyTorch: data, models, attacks, losses, methods, step, trainer
    names        the names that cross layers: metric keys, tags, artifacts

``ablate.legacy`` keeps the module paths of earlier versions importable for ``--resume``.
"""

from ablate import legacy

legacy.install()
