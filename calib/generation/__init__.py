"""Batched, cached, resumable generation (:mod:`.generate`) and its cache (:mod:`.cache`)."""
