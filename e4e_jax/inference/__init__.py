"""Pure functions over a bundle's variables: encode (inversion, restyle), render, edit (editing, directions,
editor), align faces (alignment, ffhq_crop), pivotal tuning (tuning)."""
