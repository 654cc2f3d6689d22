"""``copyjob init``: look at a source, propose a job, write it.

- :mod:`copyjob.init.discovery`: what the source has (tables, row estimates, keys, indexes; file sets).
- :mod:`copyjob.init.proposal`: the choices per table (key, incremental column, mode, update method).
- :mod:`copyjob.init.render`: the commented job file and its ``variables.yaml``.
"""
