"""The shop's knowledge base and retrieval over it (faiss + all-MiniLM-L6-v2).

- `models`: Article (knowledge-base articles), Passage (a chunk with its
  embedding).
- `embedding`: the sentence-embedding model, loaded once per process.
- `index`: building, saving and loading the faiss index (flat or IVF by size).
- `services`: writes (save/unpublish/delete articles, Markdown import,
  index sync and rebuild).
- `selectors`: reads (search, retrieval for a customer message).
"""
