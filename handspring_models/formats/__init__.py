"""Readers for checkpoint formats that libraries publish (open_clip's Hub folders,
sentence-transformers' module folders), shared by the families whose models come in them.
Each reader checks what the format says against what our models implement, and refuses the rest by name."""
