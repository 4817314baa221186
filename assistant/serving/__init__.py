"""Serving: the vLLM engine (in-process or remote), its plugin and kernel, adapters and their manifests,
model preparation."""
