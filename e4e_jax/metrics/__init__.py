"""The paper's metric definitions (definitions) and their accumulation over batches (evaluator)."""
