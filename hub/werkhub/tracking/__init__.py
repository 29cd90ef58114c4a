"""MLflow behind hub login: the gateway service (``/services/mlflow/``), its route
allow-list (pure), MLflow accounts and permissions spoken as MLflow's administrator, and
identity (who a notebook, job or browser is when it talks to MLflow).

Owns: MLflow. May import ``werkhub.auth``, ``werkhub.config``, ``werkhub.errors``,
``werkhub.http``; never ``werkhub.service``.
"""
