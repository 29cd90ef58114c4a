"""The ``werkhub`` command line: one command tree (``up``, ``users``, ``gpus``, ``images``,
``jobs``, ``config``). ``werkhub.cli.main`` builds the tree; each sub-command module adds
its own commands and imports nothing from ``main``. Nothing imports ``werkhub.cli``.
"""
