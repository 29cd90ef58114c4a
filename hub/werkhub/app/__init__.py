"""``werkhub up`` and the JupyterHub wiring: the launcher, the pure configurer that turns a
validated configuration into JupyterHub traits, site plugins, the hub's page templates.

Owns: starting the hub, the hub's configuration. May import every other werkhub package;
nothing imports ``werkhub.app`` except ``werkhub.cli`` and ``hub/jupyterhub_config.py``.
"""
