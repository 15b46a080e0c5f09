"""Approved-answer memory: what agents corrected (or approved) answers later customers at once.

- `models`: ApprovedAnswer (one per bot reply an agent corrected or rated good).
- `store`: the process's faiss index over approved customer questions (the database is the
  truth; the index is rebuilt when the table changes) and `answer_match`.
- `services`: writes (record, revoke), called by the feedback app.
"""
