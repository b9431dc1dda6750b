"""Files on disk: atomic writes (fileio), output folders (outdir), output names (manifest), the safe
PyTorch reader (torchfile) and model bundles (bundle, e4e_bundle, restyle_bundle, pti_bundle, variable_checks)."""
