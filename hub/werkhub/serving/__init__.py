"""Model serving: registered MLflow models as endpoints behind the hub's proxy.

``spec`` (pure rules: names, resources, states, scale-to-zero and back-off decisions),
``replicas`` (what a running scoring server is, and the sandboxed local backend),
``docker`` and ``manifests`` (the container backend and the pure Docker/Kubernetes
builders), ``store`` (endpoints, tokens, metrics and request logs in the database),
``models`` (resolving and fetching registered model versions from MLflow),
``supervisor`` (starting, checking, scaling and rolling out replicas) and ``gateway``
(the ``/endpoints/<owner>/<name>/`` route: auth, cold starts, metrics, forwarding).
"""
