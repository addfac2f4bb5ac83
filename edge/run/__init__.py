"""Videos through models on this machine: one input (`one`), many inputs (`jobs`), and the pieces
they are made of. See the README's layout table for the file of each stage and each scale."""
