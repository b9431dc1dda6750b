"""Batch inversion of image folders as a streaming, resumable, multi-process job (docs/inversion_job.md):
`layout` (what is written and merged), `pipeline` (decode → device → write), `job` (the whole run)."""
