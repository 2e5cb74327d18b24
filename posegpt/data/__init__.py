"""What the data jobs and the service share: the QA shard schema (``schema``), the question and answer
templates (``templates``), and untrusted image decoding, limits and crops (``crops``)."""
