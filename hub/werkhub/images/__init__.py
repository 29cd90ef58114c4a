"""What user servers start from: the curated image catalog (``images/catalog.yaml`` at the
top of the checkout), image builds and offline wheelhouses, the container engine
(docker or podman) and the starter template catalog (``templates/``).

Owns: images and starter templates. May import ``werkhub.config`` and ``werkhub.errors``.
"""
