"""Evaluation: retrieval metrics, answer metrics, the base / +RAG / +LoRA / +RAG+LoRA comparison."""
