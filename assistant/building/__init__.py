"""Building a domain: indexing its documents, training its adapter, calibrating its gate, scaffolding and exporting."""
