"""Slurm backend: the GPU inventory read from a Slurm cluster, hub users mapped to OS
users, and the ledger's bookings of whole nodes held as Slurm reservations
(``werkhub-b<booking id>``), kept in line by a reconciliation loop.

Pure rules (``commands``, ``errors``, the planning half of ``reservations``) apart from
the I/O (``cluster`` runs the Slurm command line, ``users`` looks up and creates OS users).
"""
