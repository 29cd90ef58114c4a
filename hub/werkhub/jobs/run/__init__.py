"""Running one job run: ``launch`` (the scheduler's backends: a local sandboxed process,
a container, a Kubernetes Job manifest), ``execute`` (the entry point inside the run),
``notebook`` (papermill, report, MLflow run), ``docker`` and ``manifests`` (pure builders).
"""
