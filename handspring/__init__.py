"""Handspring: multimodal embeddings, inference only, fast on a plain CPU.

The distribution ``handspring`` holds three packages: ``handspring_models`` (the models, a library
with no web code), ``app`` (the HTTP service: Weaviate's ``/vectorize`` and OpenAI's
``/v1/embeddings``) and this one, the ``handspring`` command (``handspring.cli``).
"""
