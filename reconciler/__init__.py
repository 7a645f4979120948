"""fleet-reconciler: declarative manager for a Hostwinds sending fleet."""
