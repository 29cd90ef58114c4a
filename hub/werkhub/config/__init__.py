"""Configuration: the schema of ``werkhub.yaml`` (pure pydantic), loading it once with
messages a person can act on, the state folder's layout and its file permissions.

Owns: ``werkhub.yaml`` and the state folder's paths. May import ``werkhub.errors`` and
``werkhub.auth.names`` only; every other package may import it.
"""
