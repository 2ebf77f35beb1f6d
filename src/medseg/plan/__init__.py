"""Planning from the data: the dataset fingerprint (what the data is)."""
