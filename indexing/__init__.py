"""Ingestion, embeddings, BM25, the Qdrant store backends and hybrid retrieval."""
