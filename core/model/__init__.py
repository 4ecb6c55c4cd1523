"""WT-DiT and its files: the network (`wtdit`), its building blocks and image encoder, our checkpoint
format, the released models' layout, loading either as a model with its card, and what a config costs."""
