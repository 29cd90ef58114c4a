"""Sandboxes for user code in the embedded default (bubblewrap).

* :mod:`werkhub.sandbox.spec`: pure rules: a :class:`~werkhub.sandbox.spec.SandboxSpec`
  becomes the ``bwrap`` argument list; uid choice, limit parsing, device and cgroup plans.
* :mod:`werkhub.sandbox.host`: this machine: can it sandbox (and why not), the
  interpreter's paths, the per-user uid registry, home ownership, cgroups and ulimits.
* :mod:`werkhub.sandbox.prepare`: one call for the local spawner and local jobs that
  gives the argument list and the pre-exec step of one sandboxed process.
"""
