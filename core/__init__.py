"""specens.core: the infrastructure every stage shares, and that imports no stage.

=================  ===========================================================================
``errors``         the user-error family (:class:`SpecensError`) and the one class-list check
``config``         stage configs from TOML + ``key=value`` overrides; the rerun policy
``io``             atomic writes of every file, artifact JSON, fingerprints
``checkpoint``     safetensors weights and resumable training state
``loop``           the epoch loop: resume, train, validate, keep the best, stop early
``optim``          the optimiser and learning-rate schedule
``device``         device choice and mixed precision
``lazy``           a package's names imported on first use (light ``--help``)
=================  ===========================================================================
"""
