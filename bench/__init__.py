"""Handspring's side-by-side benchmark (``make bench`` = ``python -m bench``).

Everything is measured on the machine it runs on, against a stand-in for Weaviate's own
multi2vec-clip container that the benchmark starts itself (``bench.reference_server``), both
built from ONE random-weight full-size ViT-B/32 checkpoint (transformers ``CLIPModel``, saved
with ``save_pretrained``, converted with ``python -m handspring_models.weights convert``):

(a) service: each server started alone as its own process, time from start to ready, peak
    resident memory of its process tree, requests/s and p50/p99 latency under Weaviate's load
    (N concurrent clients, one object per request; real photos of 0.1-12 MP as JPEG, captions),
    single-text latency one request at a time, and the ratios against the targets;
(b) model alone, in process: images/s and texts/s per batch size and precision against
    transformers, and the fraction of the measured GEMM peak (big ``torch.mm``) they reach;
(c) fidelity: min cosine of each precision against fp32, of fp32 against transformers, and of
    the service's answers against the reference server's.
(f) peers (``peers``): the model alone against ONNX Runtime and OpenVINO on the same weights and
    prepared inputs, per precision and batch, timed in alternation.

Modules: ``checkpoint`` (weights), ``inputs`` (photos and captions), ``reference_server``,
``servers`` (start/ready/memory), ``load`` (load generator), ``model_bench``, ``fidelity``,
``report`` (table, JSON, plot). Results go to ``bench/results/`` (``bench.json``,
``throughput.png``). ``--quick`` runs a tiny model with a few requests: it proves the
benchmark works (CI), its numbers mean nothing.
"""
