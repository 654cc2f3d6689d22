"""Delta Lake tables as a destination (delta-rs): :class:`DeltaDestination`; ``copyjob maintain`` compacts and
vacuums them (:mod:`.maintenance`). Needs the ``delta`` extra (``deltalake``)."""

from copyjob.connectors.delta.destination import DeltaDestination

__all__ = ["DeltaDestination"]
