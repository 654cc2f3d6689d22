"""The vocabulary every layer shares: schema, change batches, positions, errors, URLs, values, the contracts
where the stages meet (:mod:`copyjob.core.contracts`), the log source of change capture
(:mod:`copyjob.core.capture`) and the transport interface.

Nothing here imports the application (``copyjob.*`` outside ``core``) or a stage package: the stage packages
(``snapshot``, ``ingest``, ``apply``, ``offsets``) and ``connectors`` import only this package, so any of them
can be read, tested and replaced on its own.
"""
